"""The trust settings (SPEC 15): identity, publishers, aggregators, TLS and login to the broker."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trustme
from support.environment import without_settings

from bus_tasks.config import Settings, load_settings
from bus_tasks.errors import ConfigError
from bus_tasks.identity import OFF, TrustPolicy
from bus_tasks.workers.wiring import warn_if_identity_off

TLS_URL = "amqps://broker.example:5671/bus"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    without_settings(monkeypatch, tmp_path)


@pytest.fixture
def pems(tmp_path: Path) -> dict[str, Path]:
    """A CA, and a certificate (CN vdsm) and its key, as PEM files."""
    ca = trustme.CA()
    cert = ca.issue_cert("host.example", common_name="vdsm")
    where = tmp_path / "secret-dir"
    where.mkdir()
    files = {name: where / f"{name}.pem" for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(files["ca"])
    cert.cert_chain_pems[0].write_to_path(files["cert"])
    cert.private_key_pem.write_to_path(files["key"])
    return files


def tls(pems: dict[str, Path], **more: object) -> dict[str, Any]:
    return {
        "broker_url": TLS_URL,
        "broker_ssl_ca": pems["ca"],
        "broker_ssl_cert": pems["cert"],
        "broker_ssl_key": pems["key"],
        **more,
    }


def test_a_broker_identity_deployment_reads_from_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pems: dict[str, Path]
) -> None:
    path = tmp_path / "trust.toml"
    path.write_text(
        f"""broker_url = "{TLS_URL}"
identity = "broker"
publishers = {{ gluster = ["gluster-host1", "gluster-host2"] }}
aggregators = ["agg1"]
broker_ssl_ca = "{pems["ca"]}"
broker_ssl_cert = "{pems["cert"]}"
broker_ssl_key = "{pems["key"]}"
broker_login_method = "EXTERNAL"
"""
    )
    monkeypatch.setenv("BUS_TASKS_CONFIG", str(path))
    settings = load_settings()
    assert (settings.identity, settings.broker_login_method, settings.broker_ssl_key) == (
        "broker",
        "EXTERNAL",
        pems["key"],
    )
    assert settings.trust == TrustPolicy(
        mode="broker",
        publishers={"gluster": frozenset({"gluster-host1", "gluster-host2"})},
        aggregators=frozenset({"agg1"}),
    )


def test_publishers_and_aggregators_come_from_the_environment_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BUS_TASKS_IDENTITY", "broker")
    monkeypatch.setenv("BUS_TASKS_PUBLISHERS", '{"vdsm": ["host-a.example"]}')
    monkeypatch.setenv("BUS_TASKS_AGGREGATORS", '["agg1", "agg2"]')
    settings = load_settings()
    assert settings.trust.speakers("vdsm") == {"vdsm", "host-a.example"}
    assert settings.trust.aggregators == {"agg1", "agg2"}


def test_the_default_trusts_everyone() -> None:
    assert Settings().trust == OFF


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"identity": "broker"},
            'identity = "broker" needs aggregators = ["identity", ...]',
        ),
        (
            {"identity": "broker", "aggregators": ["agg1"], "broker_url": "redis://127.0.0.1:6379/0"},
            'identity = "broker" needs RabbitMQ (amqp:// or amqps://): only it vouches for user_id',
        ),
        ({"identity": "brokr"}, "identity: Input should be 'off' or 'broker'"),
        ({"broker_login_method": "KERBEROS"}, "broker_login_method: Input should be"),
        ({"publishers": {"Not A Subsystem": ["x"]}}, "publishers.Not A Subsystem.[key]"),
        ({"publishers": {"vdsm": [" spaced"]}}, "publishers.vdsm.0: String should match pattern"),
        ({"aggregators": [""]}, "aggregators.0: String should match pattern"),
        (
            {"broker_login_method": "EXTERNAL"},
            'broker_login_method = "EXTERNAL" logs in with a client certificate',
        ),
    ],
)
def test_bad_trust_settings_are_refused_with_what_to_do(values: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**values)
    assert message in str(caught.value)


def test_tls_files_need_an_amqps_url(pems: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**tls(pems, broker_url="amqp://127.0.0.1:5672/"))
    assert "broker_ssl_ca, broker_ssl_cert, broker_ssl_key need an amqps:// broker_url" in str(caught.value)


def test_a_certificate_needs_its_key(pems: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(broker_url=TLS_URL, broker_ssl_cert=pems["cert"])
    assert "broker_ssl_cert and broker_ssl_key go together" in str(caught.value)


def test_a_missing_key_file_is_refused_without_showing_its_path(pems: dict[str, Path]) -> None:
    pems["key"].unlink()
    with pytest.raises(ConfigError) as caught:
        load_settings(**tls(pems))
    assert "broker_ssl_key does not name a readable file" in str(caught.value)
    assert "secret-dir" not in str(caught.value)


def test_certificate_login_over_tls_is_accepted(pems: dict[str, Path]) -> None:
    settings = load_settings(**tls(pems, broker_login_method="EXTERNAL"))
    assert (settings.broker, settings.broker_ssl_ca) == (TLS_URL, pems["ca"])
    assert settings.broker_login.user(settings.broker) == "vdsm"
    assert "secret-dir" not in repr(settings.broker_login)


def test_certificate_login_needs_a_certificate_with_a_cn(pems: dict[str, Path]) -> None:
    pems["cert"].write_bytes(trustme.CA().issue_cert("host.example").cert_chain_pems[0].bytes())
    with pytest.raises(ConfigError) as caught:
        load_settings(**tls(pems, broker_login_method="EXTERNAL"))
    assert "broker_ssl_cert: the certificate's subject has no CN (EXTERNAL logs in as its CN)" in str(
        caught.value
    )


def test_tls_with_only_a_ca_and_a_password_login_is_accepted(pems: dict[str, Path]) -> None:
    settings = load_settings(broker_url="amqps://user:pw@broker.example/", broker_ssl_ca=pems["ca"])
    assert (settings.broker_ssl_cert, settings.broker_login_method) == (None, None)


def test_identity_broker_is_refused_where_nothing_vouches_for_senders() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(identity="broker", aggregators=["agg1"], broker_url="memory://")
    assert 'identity = "broker" needs RabbitMQ (amqp:// or amqps://)' in str(caught.value)


@pytest.mark.parametrize(
    ("values", "lines"),
    [
        ({}, 1),
        ({"broker_url": "redis://127.0.0.1:6379/0"}, 1),
        ({"broker_url": "memory://"}, 0),
        ({"identity": "broker", "aggregators": ["agg1"]}, 0),
    ],
)
def test_serve_warns_in_one_line_when_identity_is_off_on_a_shared_broker(
    values: dict[str, Any], lines: int, caplog: pytest.LogCaptureFixture
) -> None:
    log = logging.getLogger("bus_tasks.serve")
    with caplog.at_level(logging.WARNING, logger="bus_tasks.serve"):
        warn_if_identity_off(load_settings(**values), log)
    warnings = [r.getMessage() for r in caplog.records if r.name == "bus_tasks.serve"]
    assert len(warnings) == lines
    assert all(
        w.startswith('identity = "off": any user of the broker can publish as any subsystem')
        for w in warnings
    )


def test_no_tls_file_path_shows_in_the_settings_repr(pems: dict[str, Path]) -> None:
    settings = load_settings(**tls(pems, broker_login_method="EXTERNAL"))
    assert "secret-dir" not in repr(settings)
    assert "secret-dir" not in str(settings)
