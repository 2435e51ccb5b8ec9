"""docker-compose.yml holds together: pinned images, healthchecks where something waits on
them, no port used twice; and `docker compose config` accepts it where that CLI exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.required import skip_or_fail

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _services() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def test_every_image_is_pinned() -> None:
    for name, service in _services().items():
        image = service.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: {image!r} not pinned"


def test_what_others_wait_for_and_what_keeps_running_has_a_healthcheck() -> None:
    services = _services()
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):  # the short form: started, not healthy
            depends = {d: {} for d in depends}
        for dependency, rule in depends.items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            if rule.get("condition") == "service_healthy":
                assert "healthcheck" in services[dependency], f"{dependency}: no healthcheck"
        if service.get("restart") == "unless-stopped":
            assert "healthcheck" in service, f"{name} restarts for ever without a healthcheck"


def test_no_host_port_is_published_twice() -> None:
    # "${BUS_AMQP_PORT:-5672}:5672" publishes 5672 unless the environment says otherwise.
    published = [
        re.sub(r"\$\{[A-Z_]+:-(\d+)\}", r"\1", str(port)).split(":")[0]
        for service in _services().values()
        for port in service.get("ports") or ()
    ]
    assert all(p.isdigit() for p in published), published
    assert len(published) == len(set(published)), published


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        skip_or_fail("docker", "no docker CLI on this machine")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        skip_or_fail("docker", "the docker CLI here has no compose plugin")
    for profile in ([], ["--profile", "cluster"]):
        done = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), *profile, "config", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
