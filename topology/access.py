"""Least-privilege users per role, from the file; passwords from the environment."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass

from dotenv import dotenv_values

from common.settings import ENV_FILE
from topology import names
from topology.spec import TopologySpec


@dataclass(frozen=True)
class UserDef:
    """A broker user, its tags and its permissions on the vhost."""

    name: str
    password_env: str
    tags: str
    configure: str
    write: str
    read: str

    @property
    def password(self) -> str | None:
        """The password from the environment or `.env`, as every setting (never the file)."""
        return os.environ.get(self.password_env) or dotenv_values(ENV_FILE).get(self.password_env)


def _any(*names_: str) -> str:
    return "^(" + "|".join(re.escape(n) for n in names_) + ")$"


def desired_users(spec: TopologySpec) -> list[UserDef]:
    """The order service, one worker user per downstream, and the operator."""
    access = spec.access
    if access is None:
        return []

    def env(user: str) -> str:
        return access.password_env_prefix + re.sub(r"[^A-Za-z0-9]", "_", user).upper()

    ex = spec.exchange
    users = [
        # Publishes to `orders` only (the alternate exchange receives what it cannot route).
        UserDef(
            access.producer_user,
            env(access.producer_user),
            "",
            "^$",
            _any(ex.name, ex.alternate_exchange),
            "^$",
        ),
    ]
    for d, ds in spec.downstreams.items():
        user = access.worker_user_prefix + d
        shards = [names.shard(d, i) for i in range(ds.shards)]
        users.append(
            UserDef(
                user,
                env(user),
                "",
                "^$",
                _any(names.retry_exchange(d), names.dead_exchange(d)),
                _any(*shards, names.dlq(d)),
            )
        )
    users.append(
        UserDef(access.operator_user, env(access.operator_user), "administrator", ".*", ".*", ".*")
    )
    return users


def password_matches(password: str, stored_hash: str) -> bool:
    """Whether a password matches the broker's hash (rabbit_password_hashing_sha256)."""
    try:
        raw = base64.b64decode(stored_hash)
    except ValueError:
        return False
    salt = raw[:4]
    return raw == salt + hashlib.sha256(salt + password.encode()).digest()
