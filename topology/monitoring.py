"""The bus's alert rules and compose's Prometheus scrape config, from the topology file (pure).

What the file knows, the rules know: the downstreams that must be running (a removed or dead
worker is missed by name, not by whoever happens to be scraped), each downstream's latency
objective, the alternate exchange's queue. Every rule waits a `for:` and names its runbook.
"""

from __future__ import annotations

from typing import Any

from topology.spec import TopologySpec

Json = dict[str, Any]
RUNBOOK = "docs/operations.md"
WORKER_PORT = 9102  # the first downstream's; each next one counts up (compose)
RELAY_PORT = 9101


def _rule(
    alert: str,
    expr: str,
    wait: str,
    severity: str,
    summary: str,
    description: str,
) -> Json:
    return {
        "alert": alert,
        "expr": expr,
        "for": wait,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{RUNBOOK}#{alert.lower()}",
        },
    }


def _per_downstream(spec: TopologySpec, template: str) -> str:
    """One expression per downstream, OR'ed: the alert carries each one's own label."""
    return "\n  or\n".join(template.format(d=d, **_limits(spec, d)) for d in spec.downstreams)


def _limits(spec: TopologySpec, d: str) -> dict[str, Any]:
    return {"latency_s": spec.downstreams[d].latency_objective / 1000}


def alert_rules(spec: TopologySpec) -> Json:
    """Prometheus' rule file: one group, every rule with a `for:` and a runbook_url."""
    unroutable = spec.exchange.alternate_exchange
    rules = [
        _rule(
            "BusDownstreamNotRunning",
            _per_downstream(spec, 'absent(bus_worker_shards_owned{{downstream="{d}"}})'),
            "2m",
            "critical",
            "no worker of {{ $labels.downstream }} is running",
            "No process of this downstream, which the topology file names, has been scraped "
            "for 2 minutes: it is dead, or was removed. Its shards fill and its orders wait. "
            "Start `python -m workers {{ $labels.downstream }}` (or its Deployment).",
        ),
        _rule(
            "BusWorkerDown",
            'up{job="workers"} == 0',
            "1m",
            "critical",
            "a worker process at {{ $labels.instance }} does not answer",
            "Its /metrics endpoint has not answered for a minute.",
        ),
        _rule(
            "BusRelayDown",
            "absent(bus_outbox_backlog)",
            "2m",
            "critical",
            "the outbox relay is not running",
            "No relay has been scraped for 2 minutes: nothing the order service writes reaches "
            "the broker, and the outbox grows. Start `python -m producer relay`.",
        ),
        _rule(
            "BusLagAboveScaleOut",
            # The workers set this gauge when the lag passes the file's scale_out_lag, so the
            # threshold lives in one place.
            "max by (downstream) (bus_worker_scale_out_recommended) == 1",
            "5m",
            "warning",
            "{{ $labels.downstream }} lags behind more than its scale_out_lag",
            "The downstream's shards have held more messages than the file's scale_out_lag for "
            "5 minutes. Start another worker process for it (see `python -m topology "
            "capacity`), or look for a slow store.",
        ),
        _rule(
            "BusLatencyHigh",
            _per_downstream(
                spec,
                "histogram_quantile(0.99, sum by (downstream, le) "
                '(rate(bus_worker_end_to_end_seconds_bucket{{downstream="{d}"}}[5m]))) '
                "> {latency_s:g}",
            ),
            "10m",
            "warning",
            "{{ $labels.downstream }}'s p99 end-to-end latency is above its objective",
            "Applied minus occurred_at, at the 99th percentile, has been above the file's "
            "latency_objective for 10 minutes: the downstream lags, retries or waits for "
            "predecessors (`python -m topology status` shows which).",
        ),
        _rule(
            "BusDeadLettersGrowing",
            "sum by (downstream) (label_replace(\n"
            '  delta(rabbitmq_detailed_queue_messages{queue=~".+\\\\.dlq"}[10m]),\n'
            '  "downstream", "$1", "queue", "(.+)\\\\.dlq")) > 0',
            "5m",
            "warning",
            "{{ $labels.downstream }}'s DLQ keeps growing",
            "Orders are parked. `python -m topology dlq list {{ $labels.downstream }}` shows "
            "why; once the cause is fixed, `python -m topology dlq redrive "
            "{{ $labels.downstream }}` sends them back in order.",
        ),
        _rule(
            "BusShardWithoutConsumer",
            'label_replace(rabbitmq_detailed_queue_consumers{queue=~"[a-z][a-z0-9_]*\\\\.[0-9]+"},\n'
            '  "downstream", "$1", "queue", "([a-z][a-z0-9_]*)\\\\.[0-9]+") == 0',
            "2m",
            "critical",
            "shard {{ $labels.queue }} of {{ $labels.downstream }} has no consumer",
            "Nothing applies this shard's orders: the downstream's workers are down, or hold "
            "no lease on it. `python -m topology status` shows who consumes each shard.",
        ),
        _rule(
            "BusRepublishNacked",
            "sum by (downstream) (increase(bus_worker_republish_nacked_total[5m])) > 0",
            "5m",
            "warning",
            "the broker nacks {{ $labels.downstream }}'s retries and dead letters",
            "A worker's republish to a retry tier or the DLQ was refused (a full queue, a "
            "queue without a majority). The worker tries again in place; its orders wait.",
        ),
        _rule(
            "BusUnroutableEvents",
            f'delta(rabbitmq_detailed_queue_messages{{queue="{unroutable}"}}[10m]) > 0',
            "5m",
            "warning",
            f"events reach no downstream (queue {unroutable})",
            f"Published events matched no binding and went to the alternate exchange's queue "
            f"{unroutable}: a downstream's routing_keys miss them, or a binding is gone. "
            "`python -m topology plan` shows what differs from the file.",
        ),
        _rule(
            "BusBrokerAlarm",
            "max by (instance) (rabbitmq_alarms_memory_used_watermark"
            " + rabbitmq_alarms_free_disk_space_watermark"
            " + rabbitmq_alarms_file_descriptor_limit) > 0",
            "1m",
            "critical",
            "RabbitMQ at {{ $labels.instance }} raised a resource alarm",
            "A memory, disk or file descriptor alarm blocks every publisher: the relay's "
            "confirms stop and the outbox grows. Free the resource on the node.",
        ),
        _rule(
            "BusOutboxBacklogGrowing",
            # Rows the relay has not yet had confirmed keep piling up.
            "bus_outbox_backlog > 0 and deriv(bus_outbox_backlog[10m]) > 0",
            "10m",
            "warning",
            "the outbox backlog keeps growing",
            "The relay publishes slower than orders arrive. Check its log and its confirm "
            "latency; `python -m producer relay` must be running.",
        ),
    ]
    return {"groups": [{"name": "order-event-bus", "rules": rules}]}


def scrape_config(spec: TopologySpec) -> Json:
    """Compose's Prometheus: the broker (per node and per queue), every worker replica (found
    by DNS; `python -m workers all` counts its ports up from 9102, a port per downstream,
    which becomes the `downstream` label), the relay."""
    ports = {WORKER_PORT + i: d for i, d in enumerate(spec.downstreams)}
    return {
        "global": {"scrape_interval": "5s", "evaluation_interval": "15s"},
        "rule_files": ["/etc/prometheus/alerts.yml"],
        "scrape_configs": [
            {"job_name": "rabbitmq", "static_configs": [{"targets": ["rabbitmq:15692"]}]},
            {
                "job_name": "rabbitmq-queues",
                # One series per queue: depth, ready, unacked and consumers of every shard,
                # retry tier and DLQ (the aggregated /metrics sums them per node).
                "metrics_path": "/metrics/detailed",
                "params": {"family": ["queue_coarse_metrics", "queue_consumer_count"]},
                "static_configs": [{"targets": ["rabbitmq:15692"]}],
            },
            {
                "job_name": "workers",
                "dns_sd_configs": [
                    {"names": ["workers"], "type": "A", "port": port} for port in ports
                ],
                "relabel_configs": [
                    {
                        "source_labels": ["__address__"],
                        "regex": f".+:{port}",
                        "target_label": "downstream",
                        "replacement": d,
                    }
                    for port, d in ports.items()
                ],
            },
            {
                "job_name": "producer",
                "dns_sd_configs": [{"names": ["producer"], "type": "A", "port": RELAY_PORT}],
            },
        ],
    }
