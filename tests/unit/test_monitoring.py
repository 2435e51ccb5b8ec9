"""The dashboard and the alert rules read only metrics the bus exports, from the data source
compose provisions; Prometheus loads the rules compose mounts."""

from __future__ import annotations

import yaml
from prometheus_client import CollectorRegistry

from common.health import with_process_metrics
from producer.metrics import RelayMetrics
from tests.support import monitoring as mon
from workers.metrics import DownstreamMetrics, WorkerMetrics

COMPOSE = mon.ROOT / "docker-compose.yml"


def _exported() -> set[str]:
    """Every sample name a worker's and the relay's registries expose."""
    names: set[str] = set()
    for build in (_worker_registry, _relay_registry):
        registry = with_process_metrics(CollectorRegistry())
        build(registry)
        names |= {s.name for family in registry.collect() for s in family.samples}
    return names


def _worker_registry(registry: CollectorRegistry) -> None:
    DownstreamMetrics(WorkerMetrics(registry), "inventory", ["short"])


def _relay_registry(registry: CollectorRegistry) -> None:
    RelayMetrics(registry)


def test_every_bus_metric_the_dashboard_and_alerts_read_is_exported() -> None:
    exported = _exported()
    read = set().union(*(mon.metric_names(e) for e in mon.expressions()))
    ours = {n for n in read if not n.startswith("rabbitmq_") and n != "up"}
    assert ours, "the expressions read no metric of the bus"
    assert {"bus_worker_lag_messages", "bus_outbox_backlog"} <= ours
    assert ours <= exported, f"not exported: {sorted(ours - exported)}"


def test_the_name_reader_sees_names_and_skips_functions_and_label_values() -> None:
    expr = 'rate(bus_x_total{queue=~"bus_fake.+"}[1m]) / up and rabbitmq_y'
    assert mon.metric_names(expr) == {"bus_x_total", "up", "rabbitmq_y"}


def test_the_dashboard_imports_into_any_grafana_and_filters_by_downstream() -> None:
    variables = {v["name"]: v for v in mon.dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    downstream = variables["downstream"]
    assert downstream["multi"] and downstream["includeAll"]
    assert "downstream" in downstream["query"]["query"]
    # No data source named by uid: every panel and query takes the variable.
    for panel in mon.dashboard()["panels"]:
        if "datasource" in panel:
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
    targets = mon.dashboard_targets()
    assert all(t["datasource"]["uid"] == "${datasource}" and t["expr"] for t in targets)
    per_downstream = [t["expr"] for t in targets if "bus_worker_" in t["expr"]]
    assert per_downstream and all('downstream=~"$downstream"' in e for e in per_downstream)


def test_the_dashboard_covers_what_on_call_needs() -> None:
    panels = [p for p in mon.dashboard()["panels"] if p["type"] != "row"]
    titles = " | ".join(p["title"].lower() for p in panels)
    for needed in (
        "lag (messages)",
        "lag (seconds",
        "apply and ack",
        "retries by tier",
        "dlq depth",
        "by reason",
        "end-to-end latency",
        "outbox backlog",
        "confirm latency",
    ):
        assert needed in titles, needed
    ids = [p["id"] for p in mon.dashboard()["panels"]]
    assert len(ids) == len(set(ids))


def test_every_alert_names_its_severity_and_what_to_do() -> None:
    rules = mon.alert_rules()
    names = {r["alert"] for r in rules}
    assert {
        "BusLagAboveScaleOut",
        "BusDeadLettersGrowing",
        "BusShardWithoutConsumer",
        "BusOutboxBacklogGrowing",
        "BusDownstreamNotRunning",
        "BusRelayDown",
        "BusUnroutableEvents",
        "BusBrokerAlarm",
        "BusLatencyHigh",
        "BusRepublishNacked",
    } <= names
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_prometheus_loads_the_rules_compose_mounts_beside_it() -> None:
    config = yaml.safe_load(mon.PROMETHEUS.read_text())
    service = yaml.safe_load(COMPOSE.read_text())["services"]["prometheus"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1)[::-1] for v in service["volumes"])
    for rule_file in config["rule_files"]:
        assert (mon.ROOT / mounts[rule_file]).resolve() == mon.ALERTS.resolve()
    path, params = mon.detailed_scrape()
    assert path == "/metrics/detailed" and "queue_coarse_metrics" in params["family"]
