"""Prometheus scrape config and the provisioned Grafana dashboard: they scrape what
the services expose and every query names a metric (and labels) the code defines."""

from __future__ import annotations

import importlib
import json
import re

import pytest
import yaml
from prometheus_client import REGISTRY

from tests.deploy.support import COMPOSE, DEPLOY, ROOT, load_compose, service_env

DASHBOARDS = DEPLOY / "grafana" / "dashboards"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
PROMQL_WORDS = {
    "sum", "rate", "irate", "increase", "histogram_quantile", "by", "without", "avg", "max",
    "min", "count", "le", "on", "ignoring", "topk", "bottomk", "clamp_min", "offset",
}  # fmt: skip


@pytest.fixture(scope="module")
def series() -> dict[str, set[str]]:
    """Every Sentri series name the code defines -> its label names (from the registry)."""
    modules = ["shared.metrics"] + [
        f"services.{p.parent.name}.metrics"
        for p in sorted((ROOT / "services").glob("*/metrics.py"))
    ]
    if (ROOT / "edge_agent" / "metrics.py").exists():
        modules.append("edge_agent.metrics")
    for module in modules:
        importlib.import_module(module)
    out: dict[str, set[str]] = {}
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the only listing API
        describe = getattr(collector, "describe", None)
        families = describe() if describe else []
        for family in families:
            if not family.name.startswith("sentri_"):
                continue
            labels = set(getattr(collector, "_labelnames", ()))
            if family.type == "counter":
                names = [family.name + "_total"]
            elif family.type == "histogram":
                names = [family.name + s for s in ("_bucket", "_sum", "_count")]
                labels = labels | {"le"}
            else:
                names = [family.name]
            for n in names:
                out[n] = labels
    assert "sentri_worker_frames_processed_total" in out
    return out


@pytest.fixture(scope="module")
def dashboard() -> dict:
    files = sorted(DASHBOARDS.glob("*.json"))
    assert files, "no dashboard json"
    return json.loads(files[0].read_text())


def _targets(dashboard: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def test_dashboard_queries_name_real_metrics_and_labels(dashboard, series) -> None:
    problems = []
    for title, expr in _targets(dashboard):
        metrics = [m for m in re.findall(r"\b(sentri_[a-z0-9_]+)\b", expr)]
        assert metrics, f"{title}: query names no sentri metric: {expr}"
        known_labels: set[str] = set()
        for m in metrics:
            if m not in series:
                problems.append(f"{title}: {m} is not defined by any service")
            else:
                known_labels |= series[m]
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                if label not in known_labels:
                    problems.append(f"{title}: label {label!r} not on {metrics}")
        if "histogram_quantile" in expr:
            assert "_bucket" in expr and "le" in expr, f"{title}: quantile needs le buckets"
    assert not problems, "\n".join(problems)


def test_dashboard_covers_the_pipeline(dashboard) -> None:
    exprs = " ".join(expr for _, expr in _targets(dashboard))
    for needed in (
        "sentri_ingest_frames_in_total",  # frames in
        "sentri_worker_frames_processed_total",  # processed
        "sentri_worker_frames_skipped_total",  # skipped
        "sentri_worker_latency_seconds_bucket",  # latency histogram
        "sentri_worker_process_seconds_bucket",  # inference time
        "sentri_invalid_input_total",  # invalid network input
    ):
        assert needed in exprs, needed


def test_dashboard_is_well_formed_and_uses_the_provisioned_datasource(dashboard) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
    assert dashboard["uid"] and dashboard["title"]


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    compose = load_compose(COMPOSE)
    mounts = dict(
        v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./")
    )
    assert (
        DEPLOY
        / mounts["./grafana/dashboards"].replace(
            "/var/lib/grafana/dashboards", "grafana/dashboards"
        )
    ).is_dir()
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "sentri.yml").read_text())
    assert providers["providers"][0]["options"]["path"] == mounts["./grafana/dashboards"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    prom_mount = next(
        v for v in compose["services"]["prometheus"]["volumes"] if "prometheus.yml" in v
    )
    assert (DEPLOY / prom_mount.split(":")[0]).is_file()


def test_prometheus_scrapes_every_service_that_exposes_metrics() -> None:
    compose = load_compose(COMPOSE)
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    scraped: dict[str, int] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"  # one record per replica: scaled workers are all scraped
            for name in sd["names"]:
                scraped[name] = sd["port"]
    exposing = {
        name: int(env["SENTRI_GENERAL__METRICS_PORT"])
        for name, svc in compose["services"].items()
        if (env := service_env(svc)).get("SENTRI_GENERAL__METRICS_PORT", "0") != "0"
    }
    assert exposing, "no service exposes metrics"
    assert scraped == exposing
    # Prometheus can reach them: it shares the internal network
    assert "backend" in compose["services"]["prometheus"]["networks"]
