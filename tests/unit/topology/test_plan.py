"""Plan: the diff between the file and a broker's state, without a broker."""

from __future__ import annotations

import copy
from dataclasses import replace

from broker.objects import BindingDef, ExchangeDef, QueueDef
from tests.support import topologies
from topology.compile import compile_topology
from topology.plan import Action, Reshard, make_plan


def _setup(data: dict | None = None):  # type: ignore[no-untyped-def]
    spec = topologies.spec_of(data or topologies.default_data())
    return spec, compile_topology(spec)


def test_missing_vhost_plans_everything() -> None:
    spec, desired = _setup()
    plan = make_plan(spec, desired, None, "v")
    assert plan.changes[0].kind == "vhost"
    created = plan.of(Action.CREATE)
    expected = (
        1
        + len(desired.exchanges)
        + len(desired.queues)
        + len(desired.bindings)
        + len(desired.policies)
    )
    assert len(created) == expected
    assert not plan.migrations


def test_matching_broker_has_no_changes() -> None:
    spec, desired = _setup()
    assert not make_plan(spec, desired, copy.deepcopy(desired), "v").pending


def test_retry_delay_change_touches_no_broker_object() -> None:
    # The workers stamp each copy's due time and their forwarders bring it back: a delay is
    # the workers' setting (read at start), not a queue's TTL.
    _, live = _setup()
    data = topologies.default_data()
    data["downstreams"]["loyalty"]["retry"]["tiers"]["short"] = "2s"
    spec2, desired = _setup(data)
    plan = make_plan(spec2, desired, live, "v")
    assert plan.changes == []


def test_growing_shards_is_a_live_reshard_that_creates_and_binds_in_order() -> None:
    _, live = _setup()
    data = topologies.default_data()
    data["downstreams"]["warehouse"]["shards"] = 6
    spec, desired = _setup(data)
    plan = make_plan(spec, desired, live, "v")
    assert not plan.migrations
    [step] = plan.of(Action.RESHARD)
    assert step.obj == Reshard("warehouse", 4, 6) and "shards 4 -> 6" in step.detail
    assert [(c.kind, c.name) for c in plan.of(Action.CREATE)] == [
        ("queue", "warehouse.4"),
        ("queue", "warehouse.5"),
        ("binding", "warehouse -> queue warehouse.4 [1]"),
        ("binding", "warehouse -> queue warehouse.5 [1]"),
    ]


def test_shrinking_shards_drains_the_newest_first_and_deletes_nothing_else() -> None:
    data = topologies.default_data()
    data["downstreams"]["inventory"]["shards"] = 8
    _, live = _setup(data)
    data["downstreams"]["inventory"]["shards"] = 6
    spec, desired = _setup(data)
    plan = make_plan(spec, desired, live, "v")
    [step] = plan.of(Action.RESHARD)
    assert step.obj == Reshard("inventory", 8, 6) and step.obj.shrinking == [7, 6]
    assert "unbind inventory.7, inventory.6 (newest first)" in step.detail
    assert not plan.of(Action.EXTRA) and not plan.of(Action.CREATE) and not plan.migrations


def test_shards_with_a_gap_cannot_be_resharded_safely() -> None:
    spec, desired = _setup()
    live = copy.deepcopy(desired)
    del live.queues["loyalty.1"]
    data = topologies.default_data()
    data["downstreams"]["loyalty"]["shards"] = 5
    spec, desired = _setup(data)
    plan = make_plan(spec, desired, live, "v")
    [refused] = plan.migrations
    assert refused.name == "loyalty" and "are not loyalty.0 … loyalty.2" in refused.detail


def test_more_than_ten_shards_carry_a_note_about_restarts() -> None:
    _, live = _setup()
    data = topologies.default_data()
    data["downstreams"]["fraud_audit"]["shards"] = 12
    spec, desired = _setup(data)
    plan = make_plan(spec, desired, live, "v")
    assert any("fraud_audit: more than 10 shards" in note for note in plan.notes)


def test_queue_type_change_is_a_migration() -> None:
    _, live = _setup()
    data = topologies.default_data()
    data["downstreams"]["inventory"].update(queue_type="classic", delivery_limit=None)
    spec, desired = _setup(data)
    plan = make_plan(spec, desired, live, "v")
    migrated = {c.name for c in plan.migrations}
    assert migrated == {
        "inventory.0",
        "inventory.1",
        "inventory.2",
        "inventory.3",
        "inventory.dlq",
        "inventory.retry.short",
        "inventory.retry.medium",
        "inventory.retry.long",
    }
    assert all("x-queue-type 'quorum' -> 'classic'" in c.detail for c in plan.migrations)
    assert {c.name for c in plan.of(Action.UPDATE)} == {
        "inventory.shards",
        "inventory.retry.short",
        "inventory.retry.medium",
        "inventory.retry.long",
    }


def test_single_active_consumer_and_durability_are_migrations() -> None:
    spec, desired = _setup()
    live = copy.deepcopy(desired)
    live.queues["fraud_audit.2"] = QueueDef("fraud_audit.2", {"x-queue-type": "quorum"})
    live.queues["fraud_audit.dlq"] = replace(live.queues["fraud_audit.dlq"], durable=False)
    plan = make_plan(spec, desired, live, "v")
    details = {c.name: c.detail for c in plan.migrations}
    assert details == {
        "fraud_audit.2": "x-single-active-consumer None -> True",
        "fraud_audit.dlq": "durable False -> True",
    }


def test_objects_not_in_the_file_are_extra_only_when_the_naming_scheme_owns_them() -> None:
    _, desired = _setup()
    live = copy.deepcopy(desired)
    live.add(QueueDef("legacy", {"x-queue-type": "classic"}))
    live.add(QueueDef("billing.inbox", {"x-queue-type": "quorum"}))
    live.add(ExchangeDef("audit", "topic"))  # a bare word, but not a hash exchange
    live.add(ExchangeDef("old_feed", "x-consistent-hash", {"hash-header": "order_id"}))
    live.add(BindingDef("orders", "legacy", "queue", "order.#"))
    live.add(QueueDef("amq.gen-123"))
    data = topologies.default_data()
    del data["downstreams"]["recommendations"]
    spec2, desired2 = _setup(data)
    plan = make_plan(spec2, desired2, live, "v")
    extra = {(c.kind, c.name) for c in plan.of(Action.EXTRA)}
    for foreign in ("queue legacy", "queue billing.inbox", "exchange audit"):
        assert foreign in plan.foreign
        assert tuple(foreign.split(" ", 1)) not in extra
    assert "binding orders -> queue legacy [order.#]" in plan.foreign
    assert ("exchange", "old_feed") in extra  # a downstream of an older file
    assert any("never pruned" in n and "queue legacy" in n for n in plan.notes)
    assert ("queue", "amq.gen-123") not in extra
    assert ("exchange", "recommendations") in extra
    assert ("queue", "recommendations.0") in extra
    assert ("policy", "recommendations.shards") in extra
    assert ("binding", "orders -> exchange recommendations [order.#]") in extra
    assert not plan.of(Action.CREATE) and not plan.migrations


def test_replication_settings_apply_at_creation_only_and_earn_a_note() -> None:
    spec, desired = _setup()
    live = copy.deepcopy(desired)
    for name in ("inventory.0", "inventory.1", "loyalty.dlq", "orders.log", "warehouse.2"):
        args = dict(live.queues[name].arguments)
        for key in ("x-quorum-initial-group-size", "x-initial-cluster-size"):
            args.pop(key, None)
        args["x-queue-leader-locator"] = "client-local"
        live.queues[name] = replace(live.queues[name], arguments=args)
    plan = make_plan(spec, desired, live, "v")
    assert not plan.pending
    [note] = [n for n in plan.notes if "other replication settings" in n]
    assert note.startswith("5 queue(s)")
    assert "inventory.0 (" in note and "and 2 more" in note
    assert "x-queue-leader-locator 'client-local' -> 'balanced'" in note
