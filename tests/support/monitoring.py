"""The monitoring files (Prometheus scrape config, alert rules, Grafana dashboard) and the
metric names their expressions use."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
PROMETHEUS = MONITORING / "prometheus.yml"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "order-event-bus.json"
DATASOURCES = MONITORING / "grafana" / "provisioning" / "datasources" / "prometheus.yml"

# A metric name in PromQL: an identifier not followed by "(" (a function) and not a label.
_NAME = re.compile(r"\b((?:bus|rabbitmq|process|python)_[a-z0-9_]+|up)\b(?!\s*\()")


def alert_rules() -> list[dict[str, Any]]:
    """Every rule of every group in alerts.yml."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    """The Grafana dashboard."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_targets() -> list[dict[str, Any]]:
    """Every query of every panel."""
    return [t for p in dashboard()["panels"] for t in p.get("targets", [])]


def expressions() -> list[str]:
    """Every PromQL expression of the alerts and the dashboard."""
    return [r["expr"] for r in alert_rules()] + [t["expr"] for t in dashboard_targets()]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (strings inside quotes are label values)."""
    unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(_NAME.findall(unquoted))


def detailed_scrape() -> tuple[str, dict[str, list[str]]]:
    """The path and parameters Prometheus scrapes the broker's per-queue metrics with."""
    jobs = yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]
    job = next(j for j in jobs if j.get("metrics_path") == "/metrics/detailed")
    return job["metrics_path"], job["params"]
