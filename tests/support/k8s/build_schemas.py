#!/usr/bin/env python3
"""Build standalone JSON Schemas (Draft 2020-12) for the kinds the order event bus deploys.

Inputs (nothing is downloaded by this script):
  * vendor/crds/**.yaml            CRD manifests copied verbatim from their upstream release tags
  * --k8s-defs DIR                 the "kubernetes-json-schema" folder of the PyPI wheel
                                   kubernetes-validate==1.37.0 (contains v1.30.0-local[-strict]/),
                                   fetched with:  pip download --no-deps kubernetes-validate==1.37.0
                                   and unzipped.

Outputs:
  schemas/<group>/<kind>_<version>.json          "open" variant (unknown fields allowed, like the
                                                 API server, which prunes/ignores them)
  schemas-strict/<group>/<kind>_<version>.json   strict variant: additionalProperties:false on
                                                 every object schema that declares properties and
                                                 neither declares additionalProperties nor
                                                 x-kubernetes-preserve-unknown-fields

<group> is "core" for the legacy group (apiVersion "v1").
Every output file is self-contained: the only $refs are local ("#/$defs/...").
"""

from __future__ import annotations

import argparse
import copy
import json
import pathlib
import sys

import yaml

DRAFT = "https://json-schema.org/draft/2020-12/schema"
K8S_VERSION = "v1.30.0"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

# Built-in kinds: (file in the kubernetes-validate folder, group, kind, version)
BUILTINS = [
    ("deployment-apps-v1.json", "apps", "Deployment", "v1"),
    ("job-batch-v1.json", "batch", "Job", "v1"),
    ("secret-v1.json", "core", "Secret", "v1"),
    ("configmap-v1.json", "core", "ConfigMap", "v1"),
    ("service-v1.json", "core", "Service", "v1"),
    ("poddisruptionbudget-policy-v1.json", "policy", "PodDisruptionBudget", "v1"),
]

# CRD kinds to emit (others in the vendored files are ignored).
CRD_KINDS = {
    ("rabbitmq.com", "Vhost"),
    ("rabbitmq.com", "Exchange"),
    ("rabbitmq.com", "Queue"),
    ("rabbitmq.com", "Binding"),
    ("rabbitmq.com", "Policy"),
    ("rabbitmq.com", "User"),
    ("rabbitmq.com", "Permission"),
    ("keda.sh", "ScaledObject"),
    ("monitoring.coreos.com", "ServiceMonitor"),
}


def strip_descriptions(node):
    if isinstance(node, dict):
        return {
            k: strip_descriptions(v)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))
        }
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


# ---------------------------------------------------------------- built-in kinds
def rewrite_refs(node, found: set[str]):
    """Point every $ref at the local $defs and record which definitions are used."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                name = v.split("#/$defs/", 1)[1]
                found.add(name)
                out[k] = "#/$defs/" + name
            else:
                out[k] = rewrite_refs(v, found)
        return out
    if isinstance(node, list):
        return [rewrite_refs(v, found) for v in node]
    return node


def closure(root_refs: set[str], defs: dict) -> dict:
    todo, done, out = list(root_refs), set(), {}
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        found: set[str] = set()
        out[name] = rewrite_refs(defs[name], found)
        todo.extend(found - done)
    return dict(sorted(out.items()))


def build_builtin(src_dir: pathlib.Path, fname: str, keep_desc: bool) -> dict:
    defs = json.loads((src_dir / "_definitions.json").read_text())["$defs"]
    top = json.loads((src_dir / fname).read_text())
    found: set[str] = set()
    top = rewrite_refs(top, found)
    top.pop("$id", None)
    top["$schema"] = DRAFT
    top["$defs"] = closure(found, defs)
    return top if keep_desc else strip_descriptions(top)


# ---------------------------------------------------------------- CRD kinds
def convert_crd_node(node, strict: bool, junctor: bool = False):
    """Turn a structural OpenAPI v3 (CRD) schema node into plain JSON Schema 2020-12."""
    if isinstance(node, list):
        return [convert_crd_node(v, strict, junctor) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in ("properties", "patternProperties", "$defs"):
            out[k] = {pk: convert_crd_node(pv, strict) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties", "not") and isinstance(v, dict):
            out[k] = convert_crd_node(v, strict, junctor=(k == "not"))
        elif k in ("anyOf", "allOf", "oneOf"):
            out[k] = [convert_crd_node(x, strict, junctor=True) for x in v]
        else:
            out[k] = copy.deepcopy(v)

    # OpenAPI "nullable: true" -> JSON Schema type union with null
    if out.pop("nullable", False) and "type" in out:
        t = out["type"]
        out["type"] = sorted(set(t if isinstance(t, list) else [t]) | {"null"})
    # int-or-string: structural schemas omit "type"; make it explicit if no anyOf given
    if out.get("x-kubernetes-int-or-string") and "type" not in out and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    # list-type "set" means items must be unique (map-type/list-map-keys cannot be expressed)
    if out.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    # Strict variant: close objects that the API server would prune
    if (
        strict
        and not junctor
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def build_crd(
    crd: dict, version: dict, strict: bool, k8s_defs: dict, keep_desc: bool, source: str
) -> dict:
    group = crd["spec"]["group"]
    kind = crd["spec"]["names"]["kind"]
    schema = convert_crd_node(version["schema"]["openAPIV3Schema"], strict)
    # The API server validates metadata as ObjectMeta; CRDs only say "type: object".
    found: set[str] = set()
    schema["properties"]["metadata"] = rewrite_refs({"$ref": "#/$defs/" + OBJECT_META}, found)
    schema["properties"]["apiVersion"] = dict(
        schema["properties"].get("apiVersion", {}), enum=[f"{group}/{version['name']}"]
    )
    schema["properties"]["kind"] = dict(schema["properties"].get("kind", {}), enum=[kind])
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind"})
    out = {
        "$schema": DRAFT,
        "$comment": f"Generated from {source} ({group}/{version['name']} {kind}); "
        f"metadata from Kubernetes {K8S_VERSION} ObjectMeta; "
        f"{'strict' if strict else 'open'} variant",
        **schema,
        "$defs": closure(found, k8s_defs),
    }
    return out if keep_desc else strip_descriptions(out)


def write(path: pathlib.Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--k8s-defs",
        required=True,
        type=pathlib.Path,
        help="kubernetes_validate/kubernetes-json-schema folder from the wheel",
    )
    ap.add_argument(
        "--crds",
        required=True,
        type=pathlib.Path,
        help="a folder of the upstream CRD manifests (see README.md)",
    )
    ap.add_argument("--keep-descriptions", action="store_true")
    ap.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent)
    args = ap.parse_args()

    for strict, dirname in ((True, "schemas"),):
        src = args.k8s_defs / f"{K8S_VERSION}-local{'-strict' if strict else ''}"
        k8s_defs = json.loads((src / "_definitions.json").read_text())["$defs"]
        for fname, group, kind, ver in BUILTINS:
            doc = build_builtin(src, fname, args.keep_descriptions)
            write(args.out / dirname / group / f"{kind.lower()}_{ver}.json", doc)
        for crd_path in sorted(args.crds.rglob("*.yaml")):
            crd = yaml.safe_load(crd_path.read_text())
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            if (group, kind) not in CRD_KINDS:
                continue
            for v in crd["spec"]["versions"]:
                if not v.get("served", True):
                    continue
                rel = crd_path.relative_to(args.crds)
                doc = build_crd(crd, v, strict, k8s_defs, args.keep_descriptions, str(rel))
                write(args.out / dirname / group / f"{kind.lower()}_{v['name']}.json", doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
