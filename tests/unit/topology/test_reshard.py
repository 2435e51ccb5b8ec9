"""Shrinking a downstream's shards over a fake management API, without a broker: every shard
going away is unbound first, and deleted only once a sample taken after the unbind shows
nothing ready and nothing unacknowledged; a shard that still holds messages is never deleted."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from broker.objects import BindingDef
from topology import reshard
from topology.plan import Reshard

pytestmark = pytest.mark.timeout(10)
# (sample timestamp, messages, of which unacknowledged) as the management API reports them.
Sample = tuple[int, int, int]


def _queue(sample: Sample) -> dict[str, Any]:
    stamp, messages, unacked = sample
    return {
        "messages": messages,
        "messages_details": {"samples": [{"timestamp": stamp, "sample": messages}]},
        "messages_unacknowledged_details": {"samples": [{"timestamp": stamp, "sample": unacked}]},
    }


@dataclass
class FakeManagement:
    """Answers each queue's length reads from its script (the last sample repeats) and
    records every call, in order."""

    scripts: dict[str, list[Sample]]
    calls: list[tuple[str, str]] = field(default_factory=list)

    def unbind(self, vhost: str, b: BindingDef) -> None:
        self.calls.append(("unbind", b.destination))

    def queue_lengths(self, vhost: str, queue: str) -> dict[str, Any]:
        self.calls.append(("sample", queue))
        script = self.scripts[queue]
        return _queue(script.pop(0) if len(script) > 1 else script[0])

    def delete(self, kind: str, vhost: str, name: str) -> None:
        self.calls.append((f"delete {kind}", name))

    def deleted(self) -> list[str]:
        return [name for call, name in self.calls if call == "delete queues"]


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reshard, "_POLL_SECONDS", 0.0)


def _shrink(client: FakeManagement, timeout: float = 2.0) -> list[str]:
    return reshard.shrink(client, "v", Reshard("d", 4, 2), timeout=timeout)  # type: ignore[arg-type]


def test_every_shard_going_away_is_unbound_before_anything_is_sampled_or_deleted() -> None:
    client = FakeManagement({"d.3": [(10, 0, 0), (15, 0, 0)], "d.2": [(10, 0, 0), (15, 0, 0)]})
    assert _shrink(client) == ["d.3", "d.2"]  # the newest shard first
    assert client.calls[:2] == [("unbind", "d.3"), ("unbind", "d.2")], client.calls
    assert client.deleted() == ["d.3", "d.2"]


def test_a_shard_is_deleted_only_after_a_later_sample_shows_it_empty() -> None:
    # The first sample may predate the unbind; one of the same time says nothing new; then
    # messages are still there (ready or unacknowledged), until a later sample shows none.
    drained = [(10, 0, 0), (10, 0, 0), (15, 4, 1), (20, 1, 1), (25, 0, 0)]
    client = FakeManagement({"d.3": list(drained), "d.2": [(10, 0, 0), (15, 0, 0)]})
    _shrink(client)
    first_delete = client.calls.index(("delete queues", "d.3"))
    samples = [c for c in client.calls[:first_delete] if c == ("sample", "d.3")]
    assert len(samples) == len(drained), (
        f"d.3 deleted after {len(samples)} samples, before one showed it empty: {client.calls}"
    )


@pytest.mark.parametrize(
    "holding",
    [(15, 3, 0), (15, 2, 2), (15, 0, 2)],
    ids=["ready", "unacked", "unacked-sampled-alone"],
)
def test_a_shard_that_holds_messages_is_never_deleted(holding: Sample) -> None:
    client = FakeManagement({"d.3": [(10, 0, 0), holding], "d.2": [(10, 0, 0), (15, 0, 0)]})
    with pytest.raises(reshard.DrainTimeout, match=r"d\.3 still holds [23] message"):
        _shrink(client, timeout=0.2)
    assert client.deleted() == [], f"a queue holding messages was deleted: {client.calls}"
    assert ("unbind", "d.2") in client.calls  # unbound, so nothing more reaches it
