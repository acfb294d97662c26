"""The front doors' server TLS context: a certificate, and optionally a CA that clients must be signed by."""

from __future__ import annotations

import ssl

from bus_tasks.errors import ConfigError


def server_context(cert_file: str, key_file: str, ca_file: str | None = None) -> ssl.SSLContext:
    """TLS for a listening socket; with ``ca_file``, a client certificate it signed is required.

    Raises:
        ConfigError: naming the file that cannot be read or used (ssl's own errors name none).
    """
    for what, path in (("certificate", cert_file), ("private key", key_file), ("CA", ca_file)):
        if path is not None:
            _readable(what, path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"TLS certificate {cert_file} and private key {key_file} are not a PEM certificate and its"
            f" key: {exc.reason or exc}"
        ) from None
    if ca_file is not None:
        try:
            context.load_verify_locations(ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(f"TLS CA {ca_file} is not a PEM certificate: {exc.reason or exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _readable(what: str, path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(f"TLS {what} {path} cannot be read: {exc.strerror}") from None
