"""Every alert rule under `promtool test rules`: it fires on the failure it names (the relay
dying, a worker removed, a broker alarm ...) with the labels on-call needs, and stays quiet
otherwise. The rules are monitoring/alerts.yml, generated from the topology file.

The scenarios are written here; each is turned into promtool's test format, with the
annotations the rule renders for the expected labels. promtool comes from the OS packages
(`scripts/test` unpacks Debian's); without it the tests skip, or fail where BUS_REQUIRE
names `promtool`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import monitoring as mon
from tests.support.required import skip_or_fail
from topology import monitoring
from topology.spec import DEFAULT_TOPOLOGY_FILE, load_spec

SPEC = load_spec(DEFAULT_TOPOLOGY_FILE)
DOWNSTREAMS = list(SPEC.downstreams)


@dataclass
class Scenario:
    """Input series, and which alerts of one rule are firing at which minute."""

    alert: str
    series: dict[str, str]
    firing: dict[int, list[dict[str, str]]] = field(default_factory=dict)


def _every_downstream(
    metric: str, values: str, but: dict[str, str] | None = None
) -> dict[str, str]:
    return {f'{metric}{{downstream="{d}"}}': (but or {}).get(d, values) for d in DOWNSTREAMS}


def _buckets(downstream: str, per_minute_over_120: int) -> dict[str, str]:
    """End-to-end latency histogram: 100 events a minute under 5 s, and `per_minute_over_120`
    between 60 and 120 s."""
    slow = per_minute_over_120
    return {
        f'bus_worker_end_to_end_seconds_bucket{{downstream="{downstream}",le="5"}}': "0+100x30",
        f'bus_worker_end_to_end_seconds_bucket{{downstream="{downstream}",le="60"}}': "0+100x30",
        f'bus_worker_end_to_end_seconds_bucket{{downstream="{downstream}",le="120"}}': (
            f"0+{100 + slow}x30"
        ),
        f'bus_worker_end_to_end_seconds_bucket{{downstream="{downstream}",le="+Inf"}}': (
            f"0+{100 + slow}x30"
        ),
    }


SCENARIOS = [
    # A worker removed (its Deployment deleted, its process gone): discovery forgets it, so
    # `up` says nothing; the file still names the downstream.
    Scenario(
        "BusDownstreamNotRunning",
        _every_downstream("bus_worker_shards_owned", "4x30", but={"loyalty": "4 4 4"}),
        {2: [], 12: [{"downstream": "loyalty"}]},
    ),
    Scenario(
        "BusWorkerDown",
        {'up{job="workers",instance="workers:9103"}': "1 1 0x10"},
        {1: [], 5: [{"job": "workers", "instance": "workers:9103"}]},
    ),
    # The relay dies: its series stop, nothing else says so.
    Scenario(
        "BusRelayDown",
        {'bus_outbox_backlog{instance="producer:9101"}': "0 0 0"},
        {2: [], 12: [{}]},
    ),
    Scenario(
        "BusLagAboveScaleOut",
        _every_downstream("bus_worker_scale_out_recommended", "0x30", but={"warehouse": "0 1x30"}),
        {3: [], 10: [{"downstream": "warehouse"}]},
    ),
    Scenario(
        "BusLatencyHigh",
        {**_buckets("inventory", 10), **_buckets("loyalty", 0)},
        {5: [], 25: [{"downstream": "inventory"}]},
    ),
    Scenario(
        "BusDeadLettersGrowing",
        {
            'rabbitmq_detailed_queue_messages{queue="inventory.dlq"}': "0 0 0 1+1x30",
            'rabbitmq_detailed_queue_messages{queue="loyalty.dlq"}': "3x30",
        },
        {2: [], 15: [{"downstream": "inventory"}]},
    ),
    Scenario(
        "BusShardWithoutConsumer",
        {
            'rabbitmq_detailed_queue_consumers{queue="inventory.2"}': "1 1 0x10",
            'rabbitmq_detailed_queue_consumers{queue="inventory.1"}': "1x12",
            'rabbitmq_detailed_queue_consumers{queue="inventory.dlq"}': "0x12",
        },
        {2: [], 6: [{"queue": "inventory.2", "downstream": "inventory"}]},
    ),
    Scenario(
        "BusRepublishNacked",
        {'bus_worker_republish_nacked_total{downstream="fraud_audit"}': "0 0 0 2+2x20"},
        {2: [], 12: [{"downstream": "fraud_audit"}]},
    ),
    Scenario(
        "BusUnroutableEvents",
        {
            f'rabbitmq_detailed_queue_messages{{queue="{SPEC.exchange.alternate_exchange}"}}': (
                "0 0 0 1+1x20"
            )
        },
        {2: [], 12: [{"queue": SPEC.exchange.alternate_exchange}]},
    ),
    Scenario(
        "BusBrokerAlarm",
        {
            'rabbitmq_alarms_memory_used_watermark{instance="rabbit:15692"}': "0 0 1x10",
            'rabbitmq_alarms_free_disk_space_watermark{instance="rabbit:15692"}': "0x12",
            'rabbitmq_alarms_file_descriptor_limit{instance="rabbit:15692"}': "0x12",
        },
        {1: [], 5: [{"instance": "rabbit:15692"}]},
    ),
    Scenario(
        "BusOutboxBacklogGrowing",
        {'bus_outbox_backlog{instance="producer:9101"}': "10+10x40"},
        {5: [], 25: [{"instance": "producer:9101"}]},
    ),
]


def _rules() -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for r in mon.alert_rules()}


def _rendered(text: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), text)


def _promtool_test(scenario: Scenario) -> dict[str, Any]:
    rule = _rules()[scenario.alert]
    cases = []
    for minute, alerts in scenario.firing.items():
        expected = []
        for labels in alerts:
            annotations = {k: _rendered(v, labels) for k, v in rule["annotations"].items()}
            expected.append(
                {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": annotations}
            )
        cases.append(
            {"eval_time": f"{minute}m", "alertname": scenario.alert, "exp_alerts": expected}
        )
    series = [{"series": s, "values": v} for s, v in scenario.series.items()]
    return {"interval": "1m", "input_series": series, "alert_rule_test": cases}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        skip_or_fail("promtool", "promtool is not installed (Debian's prometheus package has it)")
    assert found is not None
    return found


def test_every_rule_has_a_scenario_that_makes_it_fire() -> None:
    fired = {s.alert for s in SCENARIOS if any(s.firing.values())}
    assert fired == set(_rules())


def test_the_rules_are_what_the_file_generates() -> None:
    assert yaml.safe_load(mon.ALERTS.read_text()) == monitoring.alert_rules(SPEC), (
        "monitoring/alerts.yml is stale: run python -m topology monitoring"
    )
    assert yaml.safe_load(mon.PROMETHEUS.read_text()) == monitoring.scrape_config(SPEC), (
        "monitoring/prometheus.yml is stale: run python -m topology monitoring"
    )


def test_every_rule_waits_and_names_its_runbook() -> None:
    runbook = (mon.ROOT / "docs" / "operations.md").read_text().lower()
    for name, rule in _rules().items():
        assert re.fullmatch(r"\d+m", rule["for"]), name
        anchor = rule["annotations"]["runbook_url"].split("#", 1)[1]
        assert anchor == name.lower() and f"### {name.lower()}" in runbook, name


def test_promtool_checks_the_rules() -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(mon.ALERTS)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.alert for s in SCENARIOS])
def test_the_rule_fires_on_its_failure_and_not_before(scenario: Scenario, tmp_path: Path) -> None:
    tests = {
        "rule_files": [str(mon.ALERTS)],
        "evaluation_interval": "1m",
        "tests": [_promtool_test(scenario)],
    }
    file = tmp_path / "alerts.test.yml"
    file.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([_promtool(), "test", "rules", str(file)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
