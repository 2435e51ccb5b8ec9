"""Access passwords come from the environment or `.env`, like every setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from topology.access import desired_users
from topology.spec import DEFAULT_TOPOLOGY_FILE, load_spec


def test_a_password_in_dot_env_is_used_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = load_spec(DEFAULT_TOPOLOGY_FILE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BUS_PASSWORD_ORDER_SERVICE", raising=False)
    monkeypatch.delenv("BUS_PASSWORD_BUS_OPERATOR", raising=False)
    (tmp_path / ".env").write_text("BUS_PASSWORD_ORDER_SERVICE=from-dot-env\n")
    users = {u.name: u for u in desired_users(spec)}
    assert users["order-service"].password == "from-dot-env"
    assert users["bus-operator"].password is None
    monkeypatch.setenv("BUS_PASSWORD_ORDER_SERVICE", "from-environment")
    assert users["order-service"].password == "from-environment"
