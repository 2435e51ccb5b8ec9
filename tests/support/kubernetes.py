"""Validating Kubernetes documents against the vendored schemas (tests/support/k8s/README.md),
and the rules the operators' webhooks and CEL enforce that JSON Schema cannot say."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

SCHEMAS = Path(__file__).resolve().parent / "k8s" / "schemas"


class _Loader(yaml.SafeLoader):
    """YAML as Kubernetes reads it: an unquoted date stays a string."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def documents(text: str) -> list[dict[str, Any]]:
    """The documents of a YAML stream (empty ones dropped)."""
    return [d for d in yaml.load_all(text, Loader=_Loader) if d is not None]


@cache
def _validator(api_version: str, kind: str) -> Draft202012Validator | None:
    group, _, version = api_version.rpartition("/")
    path = SCHEMAS / (group or "core") / f"{kind.lower()}_{version}.json"
    if not path.exists():
        return None
    return Draft202012Validator(json.loads(path.read_text()))


def problems(doc: dict[str, Any]) -> list[str]:
    """What is wrong with one document ([] when it is valid)."""
    api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
    validator = _validator(api, kind)
    if validator is None:
        return [f"no vendored schema for {api} {kind}"]
    found = [
        f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]
    spec = doc.get("spec") or {}
    if api == "rabbitmq.com/v1beta1":
        ref = spec.get("rabbitmqClusterReference") or {}
        if bool(ref.get("name")) == ("connectionSecret" in ref):
            found.append("set exactly one of rabbitmqClusterReference name / connectionSecret")
        if kind == "Permission" and bool(spec.get("user")) == ("userReference" in spec):
            found.append("set exactly one of user / userReference")
        if kind == "Queue" and spec.get("type") == "quorum" and spec.get("durable") is not True:
            found.append("quorum queues must be durable")
        if kind == "Exchange" and "durable" not in spec:
            found.append("durable unset: the operator's default is false")
    scaled = api == "keda.sh/v1alpha1" and kind == "ScaledObject"
    if scaled and spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        found.append("minReplicaCount must be at most maxReplicaCount")
    return found
