"""Settings: TLS files folded into the AMQP URL, and readable errors for bad values."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from common.settings import (
    Settings,
    SettingsError,
    addresses,
    load_settings,
    with_vhost,
    without_credentials,
)
from workers.process.settings import WorkerSettings


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    paths = tuple(tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    for p in paths:
        p.write_text("x")
    return paths  # type: ignore[return-value]


def test_tls_files_reach_the_url_aiormq_reads(tmp_path: Path) -> None:
    ca, cert, key = _files(tmp_path)
    s = Settings(
        amqp_url="amqps://u:p@broker:5671/orders",
        amqp_ca_file=ca,
        amqp_cert_file=cert,
        amqp_key_file=key,
    )
    query = parse_qs(urlsplit(s.amqp_url).query)
    assert query == {"cafile": [str(ca)], "certfile": [str(cert)], "keyfile": [str(key)]}
    assert s.vhost == "orders"
    moved = with_vhost(s.amqp_url, "other")
    assert urlsplit(moved).path == "/other" and parse_qs(urlsplit(moved).query) == query
    assert s.management_ca_file == ca


def test_a_query_already_in_the_url_wins(tmp_path: Path) -> None:
    ca, *_ = _files(tmp_path)
    s = Settings(amqp_url="amqps://broker/?cafile=/elsewhere.pem", amqp_ca_file=ca)
    assert parse_qs(urlsplit(s.amqp_url).query)["cafile"] == ["/elsewhere.pem"]


def test_no_tls_settings_leave_the_url_alone() -> None:
    url = "amqp://guest:guest@localhost:5672/"
    assert Settings(amqp_url=url).amqp_url == url
    assert Settings(amqp_url=url).management_ca_file is None


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"AMQP_CA_FILE": "{ca}"}, "need an amqps:// URL"),
        ({"AMQP_URL": "amqps://b/", "AMQP_CA_FILE": "/nowhere/ca.pem"}, "not found"),
        ({"AMQP_URL": "amqps://b/", "AMQP_CERT_FILE": "{ca}"}, "go together"),
        ({"WORKERS_METRICS_PORT": "nine"}, "WORKERS_METRICS_PORT"),
    ],
)
def test_bad_settings_give_one_readable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    ca, *_ = _files(tmp_path)
    monkeypatch.delenv("AMQP_URL", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(ca=ca))
    with pytest.raises(SettingsError, match="bad setting") as caught:
        load_settings(WorkerSettings)  # the shared settings and the workers' own
    assert says in str(caught.value)


def test_a_cluster_is_several_urls_with_one_vhost(tmp_path: Path) -> None:
    ca, *_ = _files(tmp_path)
    urls = "amqps://u:p@n1:5671/orders, amqps://u:p@n2:5671/orders"
    s = Settings(amqp_url=urls, amqp_ca_file=ca)
    assert s.vhost == "orders"
    assert [urlsplit(u).hostname for u in addresses(s.amqp_url)] == ["n1", "n2"]
    assert all(parse_qs(urlsplit(u).query) == {"cafile": [str(ca)]} for u in addresses(s.amqp_url))
    moved = with_vhost(s.amqp_url, "other")
    assert [urlsplit(u).path for u in addresses(moved)] == ["/other", "/other"]


def test_cluster_urls_naming_different_vhosts_are_one_readable_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMQP_URL", "amqp://n1/a,amqp://n2/b")
    with pytest.raises(SettingsError, match="different vhosts"):
        load_settings()


def test_a_url_printed_without_credentials_keeps_its_scheme_host_and_port() -> None:
    assert without_credentials("http://guest:guest@localhost:15672") == "http://localhost:15672"
    assert without_credentials("http://localhost:15672") == "http://localhost:15672"
    assert (
        without_credentials("https://op:s3cret@a:15671,https://op:s3cret@b:15671")
        == "https://a:15671"
    )
