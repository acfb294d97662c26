"""How a process logs in to the broker: TLS files, the SASL method, and who it is there (SPEC 15).

With ``broker_login_method = "EXTERNAL"`` RabbitMQ (``rabbitmq_auth_mechanism_ssl``, with
``ssl_cert_login_from = common_name``) takes the client certificate's CN as the user name; else
the user is the URL's. That name is the ``user_id`` every publish carries, which RabbitMQ checks
against the login, so receivers can believe it. No kombu here; file paths never reach a repr.
"""

from __future__ import annotations

import base64
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

LoginMethod = Literal["AMQPLAIN", "PLAIN", "EXTERNAL"]

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.DOTALL)
_COMMON_NAME_OID = bytes.fromhex("550403")  # 2.5.4.3
_OID, _EXPLICIT_0 = 0x06, 0xA0


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """TLS to the broker (files of PEM) and the SASL login method; all optional."""

    ca_file: Path | None = field(default=None, repr=False)
    cert_file: Path | None = field(default=None, repr=False)
    key_file: Path | None = field(default=None, repr=False)
    method: LoginMethod | None = None

    def ssl_options(self) -> dict[str, Any] | None:
        """py-amqp's TLS options (kombu's ``ssl=``): the broker is verified against ``ca_file``
        and its host name; ours is shown. None when no file is given (``amqps://`` alone: the
        system's CAs)."""
        if self.ca_file is None and self.cert_file is None:
            return None
        return {
            "ca_certs": None if self.ca_file is None else str(self.ca_file),
            "certfile": None if self.cert_file is None else str(self.cert_file),
            "keyfile": None if self.key_file is None else str(self.key_file),
            "cert_reqs": ssl.CERT_REQUIRED,
            "server_hostname": None,  # kombu fills in the host it connects to (also on failover)
        }

    def user(self, url: str) -> str | None:
        """The user name the broker knows this process by (the ``user_id`` it stamps), if known.

        Raises:
            ValueError: when the certificate of an EXTERNAL login has no CN.
        """
        if self.method == "EXTERNAL" and self.cert_file is not None:
            return certificate_common_name(self.cert_file.read_bytes())
        username = urlsplit(url.split(";", 1)[0]).username
        return unquote(username) if username else None


NO_LOGIN = BrokerLogin()


def certificate_common_name(pem: bytes) -> str:
    """The CN of the subject of the first certificate in ``pem``.

    Raises:
        ValueError: when there is no certificate, or its subject has no CN.
    """
    found = _PEM_CERTIFICATE.search(pem)
    if found is None:
        raise ValueError("no PEM certificate found")
    try:
        der = base64.b64decode(b"".join(found.group(1).split()), validate=True)
        name = _common_name(der)
    except (IndexError, ValueError):
        raise ValueError("malformed certificate") from None
    if name is None:
        raise ValueError("the certificate's subject has no CN")
    return name


def _common_name(der: bytes) -> str | None:
    ((_, start, end),) = _items(der, 0, len(der))
    _, tbs_start, tbs_end = next(_items(der, start, end))
    fields = [item for item in _items(der, tbs_start, tbs_end) if item[0] != _EXPLICIT_0]
    # serial, signature algorithm, issuer, validity, subject
    _, subject_start, subject_end = fields[4]
    for _, rdn_start, rdn_end in _items(der, subject_start, subject_end):
        for _, pair_start, pair_end in _items(der, rdn_start, rdn_end):
            (oid_tag, oid_start, oid_end), (_, value_start, value_end) = list(
                _items(der, pair_start, pair_end)
            )
            if oid_tag == _OID and der[oid_start:oid_end] == _COMMON_NAME_OID:
                return der[value_start:value_end].decode("utf-8")
    return None


def _items(der: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """The DER items between ``pos`` and ``end``: (tag, start of content, end of content)."""
    while pos < end:
        tag, length = der[pos], der[pos + 1]
        pos += 2
        if length & 0x80:
            size = length & 0x7F
            length = int.from_bytes(der[pos : pos + size], "big")
            pos += size
        if pos + length > end:
            raise ValueError("malformed certificate")
        yield tag, pos, pos + length
        pos += length
