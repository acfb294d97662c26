"""The broker login: TLS options for py-amqp, who the process is on the broker, paths never shown."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme

from bus_tasks.broker_login import NO_LOGIN, BrokerLogin, certificate_common_name


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.parametrize("key_type", [trustme.KeyType.ECDSA, trustme.KeyType.RSA])
@pytest.mark.parametrize("name", ["vdsm", "gluster-host1.example.com", "agg 1 é"])
def test_the_common_name_is_read_from_the_certificate(
    ca: trustme.CA, key_type: trustme.KeyType, name: str
) -> None:
    cert = ca.issue_cert("host.example", common_name=name, organization_name="Org", key_type=key_type)
    assert certificate_common_name(cert.cert_chain_pems[0].bytes()) == name


def test_the_first_certificate_of_a_chain_is_the_one_read(ca: trustme.CA) -> None:
    cert = ca.issue_cert("host.example", common_name="leaf")
    chain = b"".join(pem.bytes() for pem in cert.cert_chain_pems) + ca.cert_pem.bytes()
    assert certificate_common_name(chain) == "leaf"


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (b"", "no PEM certificate found"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "malformed certificate"),
        (b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n", "malformed certificate"),
        (b"-----BEGIN CERTIFICATE-----\nMIIBIjANBgkq\n-----END CERTIFICATE-----\n", "malformed certificate"),
    ],
)
def test_what_is_not_a_certificate_is_refused(pem: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        certificate_common_name(pem)


def test_a_certificate_without_a_common_name_is_refused(ca: trustme.CA) -> None:
    cert = ca.issue_cert("host.example")  # trustme's subject is then OU and O only
    with pytest.raises(ValueError, match="the certificate's subject has no CN"):
        certificate_common_name(cert.cert_chain_pems[0].bytes())


def test_ssl_options_verify_the_broker_and_show_our_certificate(tmp_path: Path) -> None:
    login = BrokerLogin(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem", "EXTERNAL")
    assert login.ssl_options() == {
        "ca_certs": str(tmp_path / "ca.pem"),
        "certfile": str(tmp_path / "cert.pem"),
        "keyfile": str(tmp_path / "key.pem"),
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": None,
    }
    assert NO_LOGIN.ssl_options() is None


def test_the_repr_shows_no_file_path(tmp_path: Path) -> None:
    login = BrokerLogin(tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "secret-key.pem", "EXTERNAL")
    assert repr(login) == "BrokerLogin(method='EXTERNAL')"


def test_the_user_is_the_certificates_cn_with_external_else_the_urls(ca: trustme.CA, tmp_path: Path) -> None:
    cert = ca.issue_cert("host.example", common_name="vdsm")
    cert.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    external = BrokerLogin(cert_file=tmp_path / "cert.pem", key_file=tmp_path / "key.pem", method="EXTERNAL")
    assert external.user("amqps://broker.example:5671/bus") == "vdsm"
    assert NO_LOGIN.user("amqp://gl%40ster:pw@h1/bus;amqp://gl%40ster:pw@h2/bus") == "gl@ster"
    assert NO_LOGIN.user("amqp://h1/bus") is None
    assert BrokerLogin(cert_file=tmp_path / "cert.pem").user("amqps://app:pw@h/") == "app"
