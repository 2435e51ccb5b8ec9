"""The chaos suite reuses the integration fixtures (a real broker, a fresh vhost per test)."""

from tests.integration.conftest import broker, fast_spec, management, topology_file, vhost

__all__ = ["broker", "fast_spec", "management", "topology_file", "vhost"]
