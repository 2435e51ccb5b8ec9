"""The bus's workloads on Kubernetes, from the topology file (pure): what deploy/k8s/ holds.

Per downstream: a Deployment of its workers (`python -m workers <d>`, probes on `/readyz` and
`/healthz`, credentials from Secrets, the file from a ConfigMap, stores on PostgreSQL so that
replicas share them), a Service for its metrics, a PodDisruptionBudget, and a KEDA
ScaledObject that scales it on its shards' messages (ready and unacked, through the management
API) up to its shard count: a replica beyond the shards would hold no lease and consume
nothing. Beside them: the relay (one per order database), the topology as a one-shot Job for
clusters without the Messaging Topology Operator, and a ServiceMonitor for Prometheus.
"""

from __future__ import annotations

from typing import Any

from topology import names
from topology.spec import TopologySpec

Resource = dict[str, Any]
PART_OF = "order-event-bus"
METRICS_PORT = 9102
RELAY_METRICS_PORT = 9101
TOPOLOGY_PATH = "/etc/order-event-bus/orders.yaml"
CONFIG_MAP = "order-event-bus-topology"
# The Secrets the workloads read; none is written here (see docs/deploy.md#kubernetes).
STORES_SECRET = "order-event-bus-stores"  # key `dsn`: the workers' PostgreSQL
OPERATOR_SECRET = "order-event-bus-operator"  # keys `amqp-url`, `management-url`
RELAY_SECRET = "order-event-bus-relay"  # keys `amqp-url`, `outbox-dsn`


def worker_secret(d: str) -> str:
    """The Secret of one downstream's workers (keys `amqp-url`, its own least-privilege user,
    and `management-url`, what KEDA reads queue depths with)."""
    return f"order-event-bus-worker-{_dns(d)}"


def _dns(name: str) -> str:
    return name.replace("_", "-").replace(".", "-")


def _labels(component: str, downstream: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "order-event-bus",
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/component": component,
    }
    if downstream is not None:
        labels["order-event-bus/downstream"] = _dns(downstream)
    return labels


def _meta(name: str, namespace: str, labels: dict[str, str]) -> Resource:
    return {"name": name, "namespace": namespace, "labels": labels}


def _secret_env(name: str, secret: str, key: str) -> Resource:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}


def _container(
    name: str, image: str, command: list[str], env: list[Resource], port: int
) -> Resource:
    def probe(path: str, period: int, failures: int) -> Resource:
        return {
            "httpGet": {"path": path, "port": "metrics"},
            "periodSeconds": period,
            "failureThreshold": failures,
        }

    return {
        "name": name,
        "image": image,
        "command": command,
        "env": [
            {"name": "TOPOLOGY_FILE", "value": TOPOLOGY_PATH},
            {"name": "LOG_JSON", "value": "true"},
            *env,
        ],
        "ports": [{"name": "metrics", "containerPort": port}],
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": {**probe("/healthz", 10, 6), "initialDelaySeconds": 20},
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
        "securityContext": _SECURITY,
        "volumeMounts": [
            {"name": "topology", "mountPath": "/etc/order-event-bus", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def _pod(container: Resource, labels: dict[str, str], grace: int) -> Resource:
    return {
        "metadata": {"labels": labels},
        "spec": {
            "terminationGracePeriodSeconds": grace,
            "containers": [container],
            "volumes": [
                {"name": "topology", "configMap": {"name": CONFIG_MAP}},
                {"name": "tmp", "emptyDir": {}},
            ],
        },
    }


def workers(spec: TopologySpec, namespace: str, image: str) -> list[Resource]:
    """Per downstream: Deployment, Service, PodDisruptionBudget."""
    out: list[Resource] = []
    for d, ds in spec.downstreams.items():
        name, labels = f"workers-{_dns(d)}", _labels("workers", d)
        command = ["python", "-m", "workers", d, "--metrics-port", str(METRICS_PORT)]
        env = [
            _secret_env("AMQP_URL", worker_secret(d), "amqp-url"),
            _secret_env("WORKERS_DSN", STORES_SECRET, "dsn"),
            # KEDA's RabbitMQ scaler reads the management URL from the target's env.
            _secret_env("RABBITMQ_MANAGEMENT_URL", worker_secret(d), "management-url"),
        ]
        out.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": _meta(name, namespace, labels),
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    # SIGTERM: stop consuming, finish and ack what is held (15 s), leave.
                    "template": _pod(
                        _container("worker", image, command, env, METRICS_PORT), labels, 30
                    ),
                },
            }
        )
        out.append(_service(name, namespace, labels, METRICS_PORT))
        out.append(
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _meta(name, namespace, labels),
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": labels}},
            }
        )
        del ds  # the shard count sizes the scaler, not the Deployment
    return out


def _service(name: str, namespace: str, labels: dict[str, str], port: int) -> Resource:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "selector": labels,
            "ports": [{"name": "metrics", "port": port, "targetPort": "metrics"}],
        },
    }


def scalers(spec: TopologySpec, namespace: str, vhost: str) -> list[Resource]:
    """A KEDA ScaledObject per downstream: 1 to `shards` replicas, on the messages (ready
    and unacked) in its shards, one replica per `scale_out_lag` of them."""
    out: list[Resource] = []
    for d, ds in spec.downstreams.items():
        name = f"workers-{_dns(d)}"
        out.append(
            {
                "apiVersion": "keda.sh/v1alpha1",
                "kind": "ScaledObject",
                "metadata": _meta(name, namespace, _labels("workers", d)),
                "spec": {
                    "scaleTargetRef": {"name": name},
                    "minReplicaCount": 1,
                    # More replicas than shards would hold no lease and consume nothing.
                    "maxReplicaCount": ds.shards,
                    "cooldownPeriod": 300,
                    "triggers": [
                        {
                            "type": "rabbitmq",
                            "metadata": {
                                "protocol": "http",  # only the HTTP API counts unacked ones
                                "mode": "QueueLength",
                                "value": str(ds.scale_out_lag),
                                "queueName": names.shard_pattern(d),
                                "useRegex": "true",
                                "operation": "sum",
                                "vhostName": vhost,
                                "hostFromEnv": "RABBITMQ_MANAGEMENT_URL",
                            },
                        }
                    ],
                },
            }
        )
    return out


def relay(namespace: str, image: str) -> list[Resource]:
    """The outbox relay of one order database: one replica, never two at once."""
    labels = _labels("relay")
    command = ["python", "-m", "producer", "relay", "--metrics-port", str(RELAY_METRICS_PORT)]
    env = [
        _secret_env("AMQP_URL", RELAY_SECRET, "amqp-url"),
        _secret_env("PRODUCER_DSN", RELAY_SECRET, "outbox-dsn"),
    ]
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _meta("relay", namespace, labels),
            "spec": {
                "replicas": 1,
                # Two relays would publish every row twice: the old one goes first.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": labels},
                "template": _pod(
                    _container("relay", image, command, env, RELAY_METRICS_PORT), labels, 30
                ),
            },
        },
        _service("relay", namespace, labels, RELAY_METRICS_PORT),
    ]


def topology_job(namespace: str, image: str) -> list[Resource]:
    """`python -m topology apply` as a one-shot Job (where the operator does not run)."""
    labels = _labels("topology")
    container = _container(
        "topology",
        image,
        ["python", "-m", "topology", "apply"],
        [
            _secret_env("AMQP_URL", OPERATOR_SECRET, "amqp-url"),
            _secret_env("RABBITMQ_MANAGEMENT_URL", OPERATOR_SECRET, "management-url"),
        ],
        METRICS_PORT,
    )
    for probe in ("readinessProbe", "livenessProbe"):
        del container[probe]  # a one-shot command serves no probes
    del container["ports"]
    pod = _pod(container, labels, 30)
    pod["spec"]["restartPolicy"] = "OnFailure"
    return [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": _meta("topology-apply", namespace, labels),
            "spec": {"backoffLimit": 6, "template": pod},
        }
    ]


def monitoring(namespace: str) -> list[Resource]:
    """A ServiceMonitor for every worker's and the relay's metrics."""
    return [
        {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "ServiceMonitor",
            "metadata": _meta("order-event-bus", namespace, _labels("monitoring")),
            "spec": {
                "selector": {"matchLabels": {"app.kubernetes.io/part-of": PART_OF}},
                "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}],
            },
        }
    ]


def config_map(topology_text: str, namespace: str) -> list[Resource]:
    """The topology file, mounted at TOPOLOGY_PATH in every pod."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(CONFIG_MAP, namespace, _labels("topology")),
            "data": {"orders.yaml": topology_text},
        }
    ]
