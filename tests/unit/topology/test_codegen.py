"""Code generators can use the published contract: @asyncapi/parser finds no error in
docs/asyncapi.json and Modelina makes a named TypeScript and Go model for every envelope and
payload, with the fields the producer always writes required and money a string.

The node side lives in tests/support/asyncapi_codegen/ (package.json, package-lock.json,
generate.mjs). It is installed with `npm ci` into a cache folder keyed by the lockfile and the
script, once per machine, so the work tree gets no node_modules. Skips without node and npm
(fails instead when BUS_REQUIRE names `node`, as scripts/test does where node is present)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.required import skip_or_fail

ROOT = Path(__file__).resolve().parents[3]
SUPPORT = ROOT / "tests" / "support" / "asyncapi_codegen"
DOC = ROOT / "docs" / "asyncapi.json"
FILES = ("package.json", "package-lock.json", "generate.mjs")
ENVELOPES = {
    "OrderCreatedEvent": "OrderCreated",
    "OrderPaidEvent": "OrderPaid",
    "OrderShippedEvent": "OrderShipped",
}
ALWAYS_WRITTEN = {"event_id", "order_id", "seq", "occurred_at", "schema_version", "event_type"}
MONEY = {"OrderCreated": "total", "LineItem": "price", "OrderPaid": "amount"}


def _installed() -> Path:
    """The support folder with its node_modules, installed once per lockfile and script."""
    if not (shutil.which("node") and shutil.which("npm")):
        skip_or_fail("node", "node and npm are not installed")
    key = hashlib.sha256(b"".join((SUPPORT / f).read_bytes() for f in FILES)).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asyncapi-codegen"
    target = base / key
    if (target / "node_modules" / ".package-lock.json").exists():
        return target
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=base, prefix=".install-"))
    for f in FILES:
        shutil.copy2(SUPPORT / f, staging / f)
    subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=staging,
        check=True,
        timeout=300,
        env={**os.environ, "SCARF_ANALYTICS": "false"},
    )
    try:
        staging.rename(target)
    except OSError:  # another run installed it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = _installed()
    out = tmp_path_factory.mktemp("models")
    run = subprocess.run(
        ["node", str(folder / "generate.mjs"), "--skip-channel-unions", str(DOC), str(out)],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    loaded: dict[str, Any] = json.loads(run.stdout)
    return loaded


def test_the_parser_finds_no_error_or_warning(summary: dict[str, Any]) -> None:
    bad = [d for d in summary["diagnostics"] if d["severity"] in ("error", "warning")]
    assert summary["valid"] and not bad, bad


@pytest.mark.parametrize("language", ["typescript", "go"])
def test_every_model_is_named_after_its_schema(summary: dict[str, Any], language: str) -> None:
    models = {m["name"]: m for m in summary[language]["models"]}
    assert not [n for n, m in models.items() if m["anonymous"]], sorted(models)
    expected = {*ENVELOPES, *ENVELOPES.values(), "LineItem", "PaymentMethod"}
    assert set(models) == expected, sorted(models)
    assert models["PaymentMethod"]["kind"] == "enum"


@pytest.mark.parametrize("language", ["typescript", "go"])
def test_what_the_producer_always_writes_is_required(
    summary: dict[str, Any], language: str
) -> None:
    models = {m["name"]: m for m in summary[language]["models"]}
    for envelope, payload in ENVELOPES.items():
        props = {p["originalName"]: p for p in models[envelope]["properties"]}
        assert {n for n, p in props.items() if p["required"]} == ALWAYS_WRITTEN | {"payload"}
        assert props["payload"]["type"] == payload


@pytest.mark.parametrize("language", ["typescript", "go"])
def test_money_is_a_string(summary: dict[str, Any], language: str) -> None:
    models = {m["name"]: m for m in summary[language]["models"]}
    for model, field in MONEY.items():
        props = {p["originalName"]: p for p in models[model]["properties"]}
        assert (props[field]["kind"], props[field]["type"]) == ("string", "string")
