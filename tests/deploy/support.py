"""Helpers for the deployment tests: reading compose/k8s files, resolving config names.

Everything is read at test time from the real sources: the compose file, the k8s
manifests, the pydantic section models of shared/ and services/, and the `sentri`
CLI, so a renamed config field or CLI command breaks these tests.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from shared.config import ConfigError, load_section

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_GPU = DEPLOY / "docker-compose.gpu.yml"
K8S = DEPLOY / "k8s"
ENV_PREFIX = "SENTRI_"

#: Dummy secrets for rendering; never used to run anything.
DUMMY_ENV = {"REDIS_PASSWORD": "dummy-redis-password", "GRAFANA_ADMIN_PASSWORD": "dummy-grafana"}

#: Compose services that are replicated workers (must scale with --scale).
WORKERS = ("detector", "faces", "analyst", "recorder")
#: Compose services built from the central image and run as `sentri <command>`.
CENTRAL = ("ingest", "detector", "faces", "analyst", "recorder", "archiver", "notifier", "gateway")


# ----------------------------------------------------------------- config models


def section_models() -> dict[str, type[BaseModel]]:
    """Section name -> pydantic model, found in shared.config and services/*/config.py."""
    from shared import config as shared_config

    models: dict[str, type[BaseModel]] = {
        "general": shared_config.GeneralConfig,
        "redis": shared_config.RedisConfig,
        "ingest": shared_config.IngestConfig,
        "worker": shared_config.WorkerConfig,
    }
    if (ROOT / "shared" / "storage" / "config.py").exists():
        from shared.storage.config import StorageConfig

        models["storage"] = StorageConfig
    for cfg in sorted((ROOT / "services").glob("*/config.py")):
        svc = cfg.parent.name
        module = importlib.import_module(f"services.{svc}.config")
        model = getattr(module, f"{svc.capitalize()}Config", None)
        if isinstance(model, type) and issubclass(model, BaseModel):
            models[svc] = model
    if (ROOT / "edge_agent" / "config.py").exists():
        edge = getattr(importlib.import_module("edge_agent.config"), "EdgeConfig", None)
        if isinstance(edge, type) and issubclass(edge, BaseModel):
            models["edge"] = edge
    return models


def _models_in(annotation: Any) -> list[type[BaseModel]] | None:
    """The models an annotation can hold; None when it is a plain value (leaf)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found: list[type[BaseModel]] = []
        for arg in typing.get_args(annotation):
            sub = _models_in(arg)
            if sub:
                found.extend(sub)
        return found or None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return None


def env_name_problem(name: str, models: Mapping[str, type[BaseModel]]) -> str | None:
    """None when ``SENTRI_<SECTION>__<FIELD>[__<SUB>...]`` names a real config field."""
    if not name.startswith(ENV_PREFIX) or "__" not in name:
        return f"{name}: not of the form SENTRI_<SECTION>__<FIELD>"
    section, *path = name[len(ENV_PREFIX) :].lower().split("__")
    if section not in models:
        return f"{name}: no config section {section!r} (known: {', '.join(sorted(models))})"
    candidates: list[type[BaseModel]] = [models[section]]
    for depth, part in enumerate(path):
        holders = [m for m in candidates if part in m.model_fields]
        if not holders:
            where = ".".join([section, *path[:depth]])
            return f"{name}: {where} has no field {part!r}"
        if depth == len(path) - 1:
            return None
        nested: list[type[BaseModel]] = []
        for m in holders:
            nested.extend(_models_in(m.model_fields[part].annotation) or [])
        if not nested:
            return f"{name}: {section}.{'.'.join(path[: depth + 1])} is not a nested section"
        candidates = nested
    return f"{name}: no field after the section"


def config_problems(
    env: Mapping[str, str], models: Mapping[str, type[BaseModel]], where: str
) -> list[str]:
    """Unknown SENTRI_* names, and values the section models reject."""
    problems = []
    names = [k for k in env if k.startswith(ENV_PREFIX)]
    for name in names:
        problem = env_name_problem(name, models)
        if problem:
            problems.append(f"{where}: {problem}")
    sections = {n[len(ENV_PREFIX) :].split("__", 1)[0].lower() for n in names}
    for section in sorted(sections & set(models)):
        try:
            load_section(models[section], section, env=dict(env))
        except ConfigError as exc:
            problems.append(f"{where}: {exc}")
    return problems


# ----------------------------------------------------------------------- the CLI


def sentri_commands() -> list[str]:
    """Top-level commands of the `sentri` CLI (its parser, or its --help output)."""
    from sentri_cli import main as cli

    if hasattr(cli, "parser_commands"):
        return list(cli.parser_commands())
    out = run_cli(["--help"]).stdout
    return re.findall(r"^\s{2}([a-z][a-z-]*)\s{2,}", out, flags=re.M)


def bin_path(name: str) -> str:
    """A console script of the running venv (falls back to PATH)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def run_cli(
    args: list[str], program: str = "sentri", timeout: float = 120
) -> subprocess.CompletedProcess:
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [bin_path(program), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def cli_help_all(
    commands: list[list[str]], program: str = "sentri"
) -> dict[str, subprocess.CompletedProcess]:
    """`<program> <cmd...> --help` for every command, run in parallel."""
    env = {**os.environ, "YOLO_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    procs = {
        " ".join(cmd): subprocess.Popen(
            [bin_path(program), *cmd, "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            cwd=ROOT,
            env=env,
        )
        for cmd in commands
    }
    results = {}
    for key, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results[key] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return results


# ------------------------------------------------------------------------ compose

_VAR = re.compile(
    r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(ValueError):
    pass


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose variable substitution: $VAR ${VAR} ${VAR:-d} ${VAR-d} ${VAR:?e} ${VAR?e} $$."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3)
        val = env.get(name)
        present = bool(val) if op in (":-", ":?") else val is not None
        if op and op.endswith("-"):
            return val if present else arg
        if op and op.endswith("?"):
            if not present:
                raise MissingVariable(f"{name}: {arg}")
            return val
        return val or ""

    return _VAR.sub(sub, value)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(x, env) for x in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    return node


def _merge(base: Any, over: Any) -> Any:
    """Compose override-file merge (mappings merge, env/args merge by key, rest replaced)."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    return over


def load_compose(*files: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Parse compose file(s) like compose does: anchors/merge keys, overrides, variables."""
    env = DUMMY_ENV if env is None else env
    merged: dict[str, Any] = {}
    for f in files or (COMPOSE,):
        doc = yaml.safe_load(f.read_text())
        merged = _merge(merged, doc)
    merged = {k: v for k, v in merged.items() if not k.startswith("x-")}
    return _interpolate_tree(merged, env)


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def docker_compose() -> list[str] | None:
    """The compose CLI: `docker-compose` (v1/v2 standalone) or None."""
    exe = shutil.which("docker-compose")
    return [exe] if exe else None


# --------------------------------------------------------------------------- k8s


def k8s_files() -> list[Path]:
    """The plain manifests (base/); overlays hold partial patches, checked rendered."""
    return sorted(p for p in (K8S / "base").glob("*.yaml") if p.name != "kustomization.yaml")


def k8s_documents(files: list[Path] | None = None) -> Iterator[tuple[Path, dict[str, Any]]]:
    for f in files or k8s_files():
        for doc in yaml.safe_load_all(f.read_text()):
            if doc is not None:
                yield f, doc


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


#: Example values for env vars a manifest takes from a Secret, where the config model
#: checks the value's form (others get a plain placeholder).
SECRET_EXAMPLES = {"SENTRI_NOTIFIER__MQTT__URL": "mqtt://sentri:example@mosquitto:1883"}


def container_env(
    container: Mapping[str, Any], configmaps: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """A container's environment: envFrom ConfigMaps, then env (secrets -> placeholders)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        ref = src.get("configMapRef")
        if ref:
            env.update(configmaps.get(ref["name"], {}))
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = str(item["value"])
        else:
            env[item["name"]] = SECRET_EXAMPLES.get(item["name"], "placeholder-from-secret")
    return env
