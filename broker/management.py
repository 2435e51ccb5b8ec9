"""A small client for the RabbitMQ management HTTP API (httpx)."""

from __future__ import annotations

import ssl
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import httpx

from broker.objects import BindingDef, BrokerObjects, ExchangeDef, PolicyDef, QueueDef
from common.settings import addresses


class ManagementError(Exception):
    """The management API could not be reached or refused a request."""


def _q(name: str) -> str:
    return quote(name, safe="")


def _binding_path(vhost: str, b: BindingDef) -> str:
    dest = "q" if b.destination_type == "queue" else "e"
    return f"/bindings/{_q(vhost)}/e/{_q(b.source)}/{dest}/{_q(b.destination)}"


class ManagementClient:
    """Typed access to the management API of one broker, or of a cluster's nodes.

    `url` may list several nodes, separated by commas: a request a node does not answer goes
    to the next, and the one that answered is asked first next time.
    """

    def __init__(self, url: str, timeout: float = 15.0, ca_file: Path | None = None) -> None:
        verify = ssl.create_default_context(cafile=ca_file) if ca_file else True
        self._nodes: list[tuple[str, httpx.Client]] = []
        for one in addresses(url):
            parts = urlsplit(one)
            user = unquote(parts.username or "guest")
            password = unquote(parts.password or "guest")
            host = parts.hostname or "localhost"
            netloc = f"{host}:{parts.port}" if parts.port else host
            base = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
            client = httpx.Client(
                base_url=base + "/api", auth=(user, password), timeout=timeout, verify=verify
            )
            self._nodes.append((base, client))
        self.user = user
        self.base_url = self._nodes[0][0]

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connection pools."""
        for _, client in self._nodes:
            client.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The request on the first node that answers (the last that did goes first)."""
        failures = []
        for _ in range(len(self._nodes)):
            base, client = self._nodes[0]
            try:
                response = client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                failures.append(f"{base} ({exc})")
                self._nodes.append(self._nodes.pop(0))
                continue
            self.base_url = base
            return response
        raise ManagementError(
            f"cannot reach the RabbitMQ management API at {'; '.join(failures)}; "
            "is the broker up with rabbitmq_management enabled? (scripts/broker-up)"
        )

    def _request(
        self,
        method: str,
        path: str,
        json: Any = None,
        ok404: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Any:
        response = self._send(method, path, json=json, headers=headers)
        if response.status_code == 404 and ok404:
            return None
        if response.status_code == 401:
            raise ManagementError(
                f"the management API at {self.base_url} refused user {self.user!r}"
            )
        if response.status_code >= 400:
            try:
                reason = response.json().get("reason", response.text)
            except ValueError:
                reason = response.text
            raise ManagementError(f"{method} {path} failed ({response.status_code}): {reason}")
        if not response.content:
            return None
        return response.json()

    # --- broker and vhosts -------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """The broker overview (versions, totals)."""
        result: dict[str, Any] = self._request("GET", "/overview")
        return result

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes (name, running), stopped ones included."""
        result: list[dict[str, Any]] = self._request("GET", "/nodes?columns=name,running")
        return result

    def rebalance_queues(self) -> None:
        """Ask the cluster to spread the leaders of its quorum queues (in the background)."""
        self._request("POST", "/rebalance/queues")

    def vhost_exists(self, vhost: str) -> bool:
        """Whether the vhost exists."""
        return self._request("GET", f"/vhosts/{_q(vhost)}", ok404=True) is not None

    def create_vhost(self, vhost: str, user: str | None = None) -> None:
        """Create the vhost and give user (default: ours) full permissions on it."""
        self._request("PUT", f"/vhosts/{_q(vhost)}", json={})
        self.set_permissions(vhost, user or self.user, ".*", ".*", ".*")

    def delete_vhost(self, vhost: str) -> None:
        """Delete the vhost and everything in it (no error when missing)."""
        self._request("DELETE", f"/vhosts/{_q(vhost)}", ok404=True)

    def get_user(self, name: str) -> dict[str, Any] | None:
        """One user (with its password hash and tags), or None."""
        result: dict[str, Any] | None = self._request("GET", f"/users/{_q(name)}", ok404=True)
        return result

    def put_user(self, name: str, password: str, tags: str) -> None:
        """Create or update a user."""
        self._request("PUT", f"/users/{_q(name)}", json={"password": password, "tags": tags})

    def delete_user(self, name: str) -> None:
        """Delete a user (no error when missing)."""
        self._request("DELETE", f"/users/{_q(name)}", ok404=True)

    def permissions(self, vhost: str, user: str) -> dict[str, Any] | None:
        """A user's permissions on a vhost, or None."""
        result: dict[str, Any] | None = self._request(
            "GET", f"/permissions/{_q(vhost)}/{_q(user)}", ok404=True
        )
        return result

    def set_permissions(self, vhost: str, user: str, configure: str, write: str, read: str) -> None:
        """Set a user's permissions on a vhost."""
        body = {"configure": configure, "write": write, "read": read}
        self._request("PUT", f"/permissions/{_q(vhost)}/{_q(user)}", json=body)

    # --- reading -----------------------------------------------------------------

    def list_objects(self, kind: str, vhost: str | None) -> list[dict[str, Any]]:
        """List exchanges, queues, bindings or policies of a vhost (None: of every vhost)."""
        path = f"/{kind}" if vhost is None else f"/{kind}/{_q(vhost)}"
        result: list[dict[str, Any]] | None = self._request("GET", path, ok404=True)
        return result or []

    def queue(self, vhost: str, name: str) -> dict[str, Any] | None:
        """One queue's details, or None when it does not exist."""
        result: dict[str, Any] | None = self._request(
            "GET", f"/queues/{_q(vhost)}/{_q(name)}", ok404=True
        )
        return result

    def queue_lengths(self, vhost: str, name: str) -> dict[str, Any] | None:
        """One queue with its recent length samples (each with the broker's timestamp)."""
        path = f"/queues/{_q(vhost)}/{_q(name)}?lengths_age=60&lengths_incr=5"
        result: dict[str, Any] | None = self._request("GET", path, ok404=True)
        return result

    def read_objects(self, vhost: str) -> BrokerObjects:
        """Read the vhost's exchanges, queues, bindings and policies."""
        live = BrokerObjects()
        for e in self.list_objects("exchanges", vhost):
            live.add(
                ExchangeDef(
                    e["name"],
                    e["type"],
                    e.get("arguments") or {},
                    e["durable"],
                    e["auto_delete"],
                    e["internal"],
                )
            )
        for q in self.list_objects("queues", vhost):
            if q.get("exclusive"):
                continue
            args = dict(q.get("arguments") or {})
            if q.get("type") and q["type"] != "classic":
                args.setdefault("x-queue-type", q["type"])
            live.add(QueueDef(q["name"], args, q["durable"], q["auto_delete"]))
        for b in self.list_objects("bindings", vhost):
            live.add(
                BindingDef(
                    b["source"],
                    b["destination"],
                    b["destination_type"],
                    b["routing_key"],
                    b.get("arguments") or {},
                )
            )
        for p in self.list_objects("policies", vhost):
            live.add(
                PolicyDef(p["name"], p["pattern"], p["definition"], p["apply-to"], p["priority"])
            )
        return live

    def import_definitions(self, document: dict[str, Any]) -> None:
        """Import a definitions document (what `rabbitmqctl import_definitions` does)."""
        self._request("POST", "/definitions", json=document)

    def connections(self, vhost: str | None = None) -> list[dict[str, Any]]:
        """Open client connections, optionally of one vhost."""
        path = f"/vhosts/{_q(vhost)}/connections" if vhost else "/connections"
        result: list[dict[str, Any]] = self._request("GET", path, ok404=True) or []
        return result

    def consumers(self, vhost: str) -> list[dict[str, Any]]:
        """The consumers of a vhost's queues (queue, tag, active, channel)."""
        result: list[dict[str, Any]] = (
            self._request("GET", f"/consumers/{_q(vhost)}", ok404=True) or []
        )
        return result

    def close_connection(self, name: str, reason: str = "closed by operator") -> None:
        """Force-close one client connection."""
        self._request(
            "DELETE", f"/connections/{_q(name)}", ok404=True, headers={"X-Reason": reason}
        )

    # --- writing -----------------------------------------------------------------

    def declare_exchange(self, vhost: str, ex: ExchangeDef) -> None:
        """Declare an exchange."""
        self._request("PUT", f"/exchanges/{_q(vhost)}/{_q(ex.name)}", json=ex.settings())

    def declare_queue(self, vhost: str, q: QueueDef) -> None:
        """Declare a queue."""
        self._request("PUT", f"/queues/{_q(vhost)}/{_q(q.name)}", json=q.settings())

    def bind(self, vhost: str, b: BindingDef) -> None:
        """Create a binding."""
        self._request("POST", _binding_path(vhost, b), json=b.settings())

    def unbind(self, vhost: str, b: BindingDef) -> None:
        """Delete a binding (looked up by its properties key)."""
        path = _binding_path(vhost, b)
        for found in self._request("GET", path, ok404=True) or []:
            if (
                found["routing_key"] == b.routing_key
                and (found.get("arguments") or {}) == b.arguments
            ):
                self._request("DELETE", f"{path}/{_q(found['properties_key'])}", ok404=True)

    def put_policy(self, vhost: str, p: PolicyDef) -> None:
        """Create or replace a policy."""
        self._request("PUT", f"/policies/{_q(vhost)}/{_q(p.name)}", json=p.settings())

    def delete(self, kind: str, vhost: str, name: str) -> None:
        """Delete an exchange, queue or policy by name (no error when missing)."""
        self._request("DELETE", f"/{kind}/{_q(vhost)}/{_q(name)}", ok404=True)
