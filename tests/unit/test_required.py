"""`BUS_REQUIRE` turns a skip into a failure for exactly what it names."""

from __future__ import annotations

import pytest

from tests.support.required import REQUIRE_ENV, required, skip_or_fail


def test_what_is_named_fails_and_the_rest_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REQUIRE_ENV, "tls, cluster")
    assert required("tls") and required("cluster") and not required("broker-control")
    with pytest.raises(pytest.fail.Exception, match=r"no TLS listeners.*must run it"):
        skip_or_fail("tls", "no TLS listeners")
    with pytest.raises(pytest.skip.Exception, match="no broker control"):
        skip_or_fail("broker-control", "no broker control")


def test_nothing_is_required_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    assert not required("tls")
    with pytest.raises(pytest.skip.Exception):
        skip_or_fail("tls", "no TLS listeners")
