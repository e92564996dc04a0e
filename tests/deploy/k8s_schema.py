"""A structural schema of the Kubernetes objects Sentri ships (kubeconform is not
obtainable from PyPI, Debian or npm here, so this is the offline stand-in).

It knows the fields Sentri's manifests may use, with their types, and rejects
unknown keys (a misspelt ``containerport`` or ``readinessprobe`` fails), wrong types
and missing required fields. Extend it when a manifest needs a new field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Obj:
    fields: dict[str, Any]
    required: tuple[str, ...] = ()


@dataclass
class ListOf:
    item: Any


@dataclass
class MapOf:
    value: Any = str


@dataclass
class OneOf:
    options: tuple[Any, ...] = field(default_factory=tuple)


INT_OR_STR = OneOf((int, str))
QUANTITY = OneOf((int, float, str))
LABELS = MapOf(str)

META = Obj({"name": str, "namespace": str, "labels": LABELS, "annotations": LABELS}, ("name",))
SELECTOR = Obj(
    {
        "matchLabels": LABELS,
        "matchExpressions": ListOf(Obj({"key": str, "operator": str, "values": ListOf(str)})),
    }
)
KEY_REF = Obj({"name": str, "key": str, "optional": bool}, ("name", "key"))
ENV_VAR = Obj(
    {
        "name": str,
        "value": str,
        "valueFrom": Obj(
            {
                "secretKeyRef": KEY_REF,
                "configMapKeyRef": KEY_REF,
                "fieldRef": Obj({"fieldPath": str, "apiVersion": str}, ("fieldPath",)),
            }
        ),
    },
    ("name",),
)
ENV_FROM = Obj(
    {
        "configMapRef": Obj({"name": str, "optional": bool}, ("name",)),
        "secretRef": Obj({"name": str, "optional": bool}, ("name",)),
        "prefix": str,
    }
)
PROBE = Obj(
    {
        "httpGet": Obj({"path": str, "port": INT_OR_STR, "scheme": str}, ("port",)),
        "exec": Obj({"command": ListOf(str)}, ("command",)),
        "tcpSocket": Obj({"port": INT_OR_STR}, ("port",)),
        "initialDelaySeconds": int,
        "periodSeconds": int,
        "timeoutSeconds": int,
        "failureThreshold": int,
        "successThreshold": int,
    }
)
RESOURCES = Obj({"requests": MapOf(QUANTITY), "limits": MapOf(QUANTITY)})
CONTAINER_SECURITY = Obj(
    {
        "allowPrivilegeEscalation": bool,
        "readOnlyRootFilesystem": bool,
        "runAsNonRoot": bool,
        "runAsUser": int,
        "runAsGroup": int,
        "privileged": bool,
        "capabilities": Obj({"drop": ListOf(str), "add": ListOf(str)}),
        "seccompProfile": Obj({"type": str}, ("type",)),
    }
)
CONTAINER = Obj(
    {
        "name": str,
        "image": str,
        "imagePullPolicy": str,
        "command": ListOf(str),
        "args": ListOf(str),
        "env": ListOf(ENV_VAR),
        "envFrom": ListOf(ENV_FROM),
        "ports": ListOf(
            Obj({"name": str, "containerPort": int, "protocol": str}, ("containerPort",))
        ),
        "readinessProbe": PROBE,
        "livenessProbe": PROBE,
        "startupProbe": PROBE,
        "resources": RESOURCES,
        "securityContext": CONTAINER_SECURITY,
        "volumeMounts": ListOf(
            Obj(
                {"name": str, "mountPath": str, "readOnly": bool, "subPath": str},
                ("name", "mountPath"),
            )
        ),
    },
    ("name", "image"),
)
VOLUME = Obj(
    {
        "name": str,
        "emptyDir": Obj({"medium": str, "sizeLimit": QUANTITY}),
        "secret": Obj(
            {
                "secretName": str,
                "optional": bool,
                "defaultMode": int,
                "items": ListOf(Obj({"key": str, "path": str})),
            },
            ("secretName",),
        ),
        "configMap": Obj({"name": str, "optional": bool, "defaultMode": int}, ("name",)),
        "persistentVolumeClaim": Obj({"claimName": str, "readOnly": bool}, ("claimName",)),
    },
    ("name",),
)
POD_SPEC = Obj(
    {
        "automountServiceAccountToken": bool,
        "serviceAccountName": str,
        "terminationGracePeriodSeconds": int,
        "nodeSelector": LABELS,
        "tolerations": ListOf(
            Obj(
                {"key": str, "operator": str, "value": str, "effect": str, "tolerationSeconds": int}
            )
        ),
        "securityContext": Obj(
            {
                "runAsNonRoot": bool,
                "runAsUser": int,
                "runAsGroup": int,
                "fsGroup": int,
                "seccompProfile": Obj({"type": str}, ("type",)),
            }
        ),
        "containers": ListOf(CONTAINER),
        "volumes": ListOf(VOLUME),
    },
    ("containers",),
)
POD_TEMPLATE = Obj(
    {"metadata": Obj({"labels": LABELS, "annotations": LABELS}), "spec": POD_SPEC},
    ("metadata", "spec"),
)
PVC_SPEC = Obj(
    {
        "accessModes": ListOf(str),
        "storageClassName": str,
        "resources": Obj({"requests": MapOf(QUANTITY)}, ("requests",)),
    },
    ("accessModes", "resources"),
)


def _top(api: str, kind: str, spec: Any = None, extra: dict[str, Any] | None = None) -> Obj:
    fields: dict[str, Any] = {"apiVersion": str, "kind": str, "metadata": META, **(extra or {})}
    if spec is not None:
        fields["spec"] = spec
    return Obj(fields, ("apiVersion", "kind", "metadata", *(("spec",) if spec is not None else ())))


SCHEMAS: dict[tuple[str, str], Obj] = {
    ("v1", "Namespace"): _top("v1", "Namespace"),
    ("v1", "ConfigMap"): _top("v1", "ConfigMap", extra={"data": MapOf(str)}),
    ("v1", "PersistentVolumeClaim"): _top("v1", "PersistentVolumeClaim", PVC_SPEC),
    ("v1", "Service"): _top(
        "v1",
        "Service",
        Obj(
            {
                "type": str,
                "clusterIP": str,
                "selector": LABELS,
                "externalTrafficPolicy": str,
                "ports": ListOf(
                    Obj(
                        {
                            "name": str,
                            "port": int,
                            "targetPort": INT_OR_STR,
                            "protocol": str,
                            "nodePort": int,
                        },
                        ("port",),
                    )
                ),
            },
            ("ports",),
        ),
    ),
    ("apps/v1", "Deployment"): _top(
        "apps/v1",
        "Deployment",
        Obj(
            {
                "replicas": int,
                "revisionHistoryLimit": int,
                "strategy": Obj(
                    {
                        "type": str,
                        "rollingUpdate": Obj(
                            {"maxSurge": INT_OR_STR, "maxUnavailable": INT_OR_STR}
                        ),
                    }
                ),
                "selector": SELECTOR,
                "template": POD_TEMPLATE,
            },
            ("selector", "template"),
        ),
    ),
    ("apps/v1", "StatefulSet"): _top(
        "apps/v1",
        "StatefulSet",
        Obj(
            {
                "serviceName": str,
                "replicas": int,
                "selector": SELECTOR,
                "template": POD_TEMPLATE,
                "volumeClaimTemplates": ListOf(
                    Obj({"metadata": META, "spec": PVC_SPEC}, ("metadata", "spec"))
                ),
            },
            ("selector", "template", "serviceName"),
        ),
    ),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): _top(
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        Obj(
            {
                "scaleTargetRef": Obj(
                    {"apiVersion": str, "kind": str, "name": str}, ("kind", "name")
                ),
                "minReplicas": int,
                "maxReplicas": int,
                "metrics": ListOf(
                    Obj(
                        {
                            "type": str,
                            "resource": Obj(
                                {
                                    "name": str,
                                    "target": Obj(
                                        {
                                            "type": str,
                                            "averageUtilization": int,
                                            "averageValue": QUANTITY,
                                        },
                                        ("type",),
                                    ),
                                },
                                ("name", "target"),
                            ),
                        },
                        ("type",),
                    )
                ),
                "behavior": Obj(
                    {
                        direction: Obj(
                            {
                                "stabilizationWindowSeconds": int,
                                "selectPolicy": str,
                                "policies": ListOf(
                                    Obj(
                                        {"type": str, "value": int, "periodSeconds": int},
                                        ("type", "value", "periodSeconds"),
                                    )
                                ),
                            }
                        )
                        for direction in ("scaleUp", "scaleDown")
                    }
                ),
            },
            ("scaleTargetRef", "maxReplicas"),
        ),
    ),
    ("networking.k8s.io/v1", "Ingress"): _top(
        "networking.k8s.io/v1",
        "Ingress",
        Obj(
            {
                "ingressClassName": str,
                "tls": ListOf(Obj({"hosts": ListOf(str), "secretName": str})),
                "rules": ListOf(
                    Obj(
                        {
                            "host": str,
                            "http": Obj(
                                {
                                    "paths": ListOf(
                                        Obj(
                                            {
                                                "path": str,
                                                "pathType": str,
                                                "backend": Obj(
                                                    {
                                                        "service": Obj(
                                                            {
                                                                "name": str,
                                                                "port": Obj(
                                                                    {"name": str, "number": int}
                                                                ),
                                                            },
                                                            ("name", "port"),
                                                        )
                                                    },
                                                    ("service",),
                                                ),
                                            },
                                            ("path", "pathType", "backend"),
                                        )
                                    )
                                },
                                ("paths",),
                            ),
                        }
                    )
                ),
            }
        ),
    ),
    ("networking.k8s.io/v1", "NetworkPolicy"): _top(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        Obj(
            {
                "podSelector": SELECTOR,
                "policyTypes": ListOf(str),
                "ingress": ListOf(
                    Obj(
                        {
                            "from": ListOf(
                                Obj(
                                    {
                                        "podSelector": SELECTOR,
                                        "namespaceSelector": SELECTOR,
                                        "ipBlock": Obj(
                                            {"cidr": str, "except": ListOf(str)}, ("cidr",)
                                        ),
                                    }
                                )
                            ),
                            "ports": ListOf(Obj({"port": INT_OR_STR, "protocol": str})),
                        }
                    )
                ),
            },
            ("podSelector",),
        ),
    ),
}

NAMESPACED = {kind for (_, kind) in SCHEMAS} - {"Namespace"}


def validate(node: Any, schema: Any, path: str = "") -> list[str]:
    """Problems of ``node`` against ``schema`` (empty list = valid)."""
    if schema is Any:
        return []
    if isinstance(schema, Obj):
        if not isinstance(node, Mapping):
            return [f"{path or '.'}: expected a mapping, got {type(node).__name__}"]
        errors = [f"{path}.{k}: required" for k in schema.required if k not in node]
        for key, value in node.items():
            if key not in schema.fields:
                errors.append(f"{path}.{key}: unknown field")
            else:
                errors += validate(value, schema.fields[key], f"{path}.{key}")
        return errors
    if isinstance(schema, ListOf):
        if not isinstance(node, list):
            return [f"{path}: expected a list, got {type(node).__name__}"]
        errors = []
        for i, item in enumerate(node):
            errors += validate(item, schema.item, f"{path}[{i}]")
        return errors
    if isinstance(schema, MapOf):
        if not isinstance(node, Mapping):
            return [f"{path}: expected a mapping, got {type(node).__name__}"]
        errors = []
        for key, value in node.items():
            errors += validate(value, schema.value, f"{path}.{key}")
        return errors
    if isinstance(schema, OneOf):
        if any(not validate(node, option, path) for option in schema.options):
            return []
        return [f"{path}: {node!r} is none of {schema.options}"]
    if isinstance(schema, type):
        if schema is int and isinstance(node, bool):
            return [f"{path}: expected int, got bool"]
        if schema is float and isinstance(node, int) and not isinstance(node, bool):
            return []
        if not isinstance(node, schema):
            return [f"{path}: expected {schema.__name__}, got {type(node).__name__} ({node!r})"]
        return []
    raise TypeError(f"bad schema node {schema!r}")


def validate_object(doc: Mapping[str, Any]) -> list[str]:
    key = (doc.get("apiVersion"), doc.get("kind"))
    schema = SCHEMAS.get(key)  # type: ignore[arg-type]
    if schema is None:
        return [f"{key}: no schema (not a kind Sentri ships; add it to tests/deploy/k8s_schema.py)"]
    return validate(doc, schema, doc["kind"])
