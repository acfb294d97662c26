"""Broker URLs: the nodes one names, and each shown without its password (logs, errors, reprs)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["broker_urls", "redact_url"]


def broker_urls(url: str) -> list[str]:
    """The nodes a broker URL names: ``amqp://a;amqp://b`` is a cluster, tried in turn."""
    return [part.strip() for part in url.split(";") if part.strip()]


def redact_url(url: str) -> str:
    """``url`` with the password of each of its nodes replaced by ``***``, for logs and errors."""
    return ";".join(_redact_one(part) for part in url.split(";"))


def _redact_one(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # unparsable: whatever follows the scheme may be a secret
        return url.partition("://")[0] + "://***"
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # keeps an IPv6 host's brackets
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
