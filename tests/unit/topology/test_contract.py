"""The published contract: docs/asyncapi.json and docs/topology.schema.json are generated from
the file and the models and cannot drift; the AsyncAPI document is valid AsyncAPI 3.0 (checked
against the official JSON Schema, vendored from @asyncapi/specs 6.11.1,
schemas/3.0.0-without-$id.json); its payload schemas accept every event the bus encodes and
refuse malformed ones; the file's schema accepts the shipped file and refuses bad ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator

from events import encode
from events.models import EventType
from simulation.planned import plan_order
from tests.support.factories import order_events
from topology import reference
from topology.contract import asyncapi, file_schema, message_name
from topology.spec import DEFAULT_TOPOLOGY_FILE, load_spec

ROOT = Path(__file__).resolve().parents[3]
ASYNCAPI_DOC = ROOT / "docs" / "asyncapi.json"
FILE_SCHEMA = ROOT / "docs" / "topology.schema.json"
ASYNCAPI_SCHEMA = ROOT / "tests" / "support" / "asyncapi-3.0.0.schema.json"
SPEC = load_spec(DEFAULT_TOPOLOGY_FILE)


def _doc() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(ASYNCAPI_DOC.read_text())
    return loaded


def test_the_committed_documents_are_generated_from_the_file() -> None:
    assert _doc() == asyncapi(SPEC), "run: python -m topology asyncapi > docs/asyncapi.json"
    assert json.loads(FILE_SCHEMA.read_text()) == file_schema(), (
        "run: python -m topology schema > docs/topology.schema.json"
    )


def test_the_asyncapi_document_is_valid_asyncapi_3() -> None:
    validator = Draft7Validator(json.loads(ASYNCAPI_SCHEMA.read_text()))
    errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(_doc())]
    assert not errors, errors
    # Schema validation does not follow $refs: each must point at something in the document.
    refs: list[str] = []

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(_doc())
    assert refs
    for ref in refs:
        node: Any = _doc()
        for token in ref.removeprefix("#/").split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        assert node, ref


def test_every_downstream_has_its_shards_and_a_consuming_operation() -> None:
    doc = _doc()
    for d, ds in SPEC.downstreams.items():
        channel = doc["channels"][f"shards.{d}"]
        assert channel["address"] == f"{d}.{{shard}}"
        assert channel["parameters"]["shard"]["enum"] == [str(i) for i in range(ds.shards)]
        assert doc["operations"][f"consume.{d}"]["action"] == "receive"
    assert doc["operations"]["publishOrderEvents"]["action"] == "send"
    assert doc["channels"]["orders"]["bindings"]["amqp"]["exchange"]["type"] == "topic"


def _payload_validator(event_type: EventType) -> Draft7Validator:
    doc = _doc()
    name = message_name(event_type)
    return Draft7Validator(
        {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    )


def _events() -> list[Any]:
    planned = [plan_order(seed, i, 0.2, 0.1).events() for seed in (1, 2) for i in range(40)]
    return [e for o in [*planned, order_events("o-1")] for e in o]


def test_the_payload_schemas_accept_every_event_the_bus_encodes() -> None:
    events = _events()
    assert {e.event_type for e in events} == set(EventType)
    for event in events:
        body = json.loads(encode(event).body)
        errors = list(_payload_validator(event.event_type).iter_errors(body))
        assert not errors, (event.event_type, [e.message for e in errors])


def test_the_payload_schemas_accept_added_optional_fields() -> None:
    body: dict[str, Any] = json.loads(encode(order_events("o-1")[0]).body)
    body["trace_id"] = "t-1"
    body["payload"]["channel"] = "web"
    body["payload"]["items"][0]["colour"] = "blue"
    assert not list(_payload_validator(EventType.CREATED).iter_errors(body))


def _broken(change: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(encode(order_events("o-1")[0]).body)
    if change == "no order_id":
        del body["order_id"]
    elif change == "seq as text":
        body["seq"] = "1"
    elif change == "seq 0":
        body["seq"] = 0
    elif change == "unknown type":
        body["event_type"] = "order.refunded"
    elif change == "no items":
        body["payload"]["items"] = []
    elif change == "qty 0":
        body["payload"]["items"][0]["qty"] = 0
    elif change == "currency lowercase":
        body["payload"]["currency"] = "eur"
    elif change == "payload a list":
        body["payload"] = []
    elif change == "bad order_id":
        body["order_id"] = "o 1; drop"
    return body


# The malformed bodies of the hostile-input tests that a schema can see. Cross-field rules
# (the total equals the items' sum, seq is its type's) are the models' own, beyond JSON Schema.
@pytest.mark.parametrize(
    "change",
    [
        "no order_id",
        "seq as text",
        "seq 0",
        "unknown type",
        "no items",
        "qty 0",
        "currency lowercase",
        "payload a list",
        "bad order_id",
    ],
)
def test_the_payload_schemas_refuse_malformed_events(change: str) -> None:
    assert list(_payload_validator(EventType.CREATED).iter_errors(_broken(change))), change


def test_the_file_schema_accepts_the_shipped_file_and_refuses_bad_ones() -> None:
    validator = Draft202012Validator(json.loads(FILE_SCHEMA.read_text()))
    shipped = yaml.safe_load(DEFAULT_TOPOLOGY_FILE.read_text())
    assert not list(validator.iter_errors(shipped))
    inventory = shipped["downstreams"]["inventory"]
    for field, value in [
        ("shards", "four"),
        ("handler_timeout", 30),  # a duration needs its unit
        ("handler_time", "2 minutes"),
        ("no_such_setting", True),
        ("semantics", "exactly-once"),
    ]:
        bad = {**shipped, "downstreams": {"inventory": {**inventory, field: value}}}
        assert list(validator.iter_errors(bad)), field


def test_every_schema_and_message_is_named_for_code_generators() -> None:
    components = _doc()["components"]
    for name, schema in components["schemas"].items():
        assert schema.get("title") == name, f"schema {name} has no title a generator can use"
    for name, message in components["messages"].items():
        assert message["name"] == name
        assert message["payload"]["$ref"].startswith("#/components/schemas/")
        assert message["headers"]["$ref"].startswith("#/components/schemas/")


def test_the_envelope_requires_what_every_event_carries_and_money_is_one_type() -> None:
    schemas = _doc()["components"]["schemas"]
    for event_type in EventType:
        required = set(schemas[message_name(event_type)]["required"])
        assert {"event_id", "occurred_at", "event_type", "order_id", "seq"} <= required
    money = [
        schemas["LineItem"]["properties"]["price"],
        schemas["OrderCreated"]["properties"]["total"],
        schemas["OrderPaid"]["properties"]["amount"],
    ]
    for schema in money:
        assert schema["type"] == "string" and "anyOf" not in schema
        assert schema["pattern"] == r"^\d{1,12}(\.\d{1,2})?$"
    validator = _payload_validator(EventType.PAID)
    body: dict[str, Any] = json.loads(encode(order_events("o-1")[1]).body)
    assert not list(validator.iter_errors(body))
    body["payload"]["amount"] = 24.98  # a number: the contract writes money as a string
    assert list(validator.iter_errors(body))


def test_retries_dead_letters_and_redrives_are_described() -> None:
    doc = _doc()
    for d, ds in SPEC.downstreams.items():
        assert doc["channels"][f"retry.{d}"]["parameters"]["tier"]["enum"] == list(ds.retry.tiers)
        assert doc["channels"][f"dlq.{d}"]["address"] == f"{d}.dlq"
        for operation in (f"retry.{d}", f"deadLetter.{d}", f"redrive.{d}"):
            assert doc["operations"][operation]["action"] == "send"
    dead = doc["components"]["schemas"]["DeadLetterHeaders"]["allOf"][1]
    assert {"x-dead-reason", "x-error-message", "x-failed-at"} <= set(dead["properties"])
    assert "x-attempts" in doc["components"]["schemas"]["EventHeaders"]["properties"]


def test_the_server_is_the_first_node_of_amqp_url_without_credentials() -> None:
    server = asyncapi(SPEC, "amqps://bus:secret@mq-1.example:5671/shop,amqps://mq-2/shop")
    assert server["servers"]["rabbitmq"] == {
        **server["servers"]["rabbitmq"],
        "host": "mq-1.example:5671",
        "pathname": "/shop",
        "protocol": "amqps",
    }
    assert "secret" not in json.dumps(server)


def test_every_key_of_the_file_schema_has_a_description() -> None:
    schema = json.loads(FILE_SCHEMA.read_text())
    missing: list[str] = []

    def visit(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, prop in node.get("properties", {}).items():
                if not (isinstance(prop, dict) and prop.get("description")):
                    missing.append(f"{path}.{key}")
                visit(prop, f"{path}.{key}")
            for key, value in node.items():
                if key != "properties":
                    visit(value, path)
        elif isinstance(node, list):
            for value in node:
                visit(value, path)

    visit(schema, "")
    assert not missing, missing


def test_the_configuration_guide_lists_every_key_as_the_models_describe_it() -> None:
    guide = (ROOT / "docs" / "configuration.md").read_text()
    begin, end = guide.index(reference.BEGIN), guide.index(reference.END) + len(reference.END)
    assert guide[begin:end] + "\n" == reference.markdown(), (
        "docs/configuration.md's keys are stale: paste `python -m topology schema --markdown`"
    )
