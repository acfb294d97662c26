"""What differs by broker kind for a link: kombu's transport class and options for a URL's
scheme, and how a login refused for good reads on AMQP and on Redis."""

from __future__ import annotations

from typing import Any

from amqp.exceptions import AccessRefused, NotAllowed

REDIS_SCHEMES = ("redis", "rediss")


def transport_options(url: str, *, redis_key_prefix: str = "") -> dict[str, Any]:
    scheme = url.split("://", 1)[0]
    if scheme == "memory":
        return {"polling_interval": 0.002}
    if scheme in REDIS_SCHEMES:
        # No polling_interval: kombu would sleep that long after every BRPOP that came back
        # empty (an idle queue's time-out), with deliveries waiting on the other channels.
        options: dict[str, Any] = {}
        if redis_key_prefix:
            options["global_keyprefix"] = redis_key_prefix
        return options
    return {}


def transport_class(scheme: str) -> type | None:
    """kombu's transport for ``scheme`` (None: by the URL), but Redis with fewer round trips."""
    if scheme not in REDIS_SCHEMES:
        return None
    from bus_tasks.transport.kombu.redis_tuning import Transport  # noqa: PLC0415 - only Redis loads it

    return Transport


def refusal(exc: BaseException) -> str | None:
    """Why the broker refused a login for good (user, password, vhost), or None if it did not."""
    if isinstance(exc, AccessRefused | NotAllowed):
        return f"{exc.code} {exc.reply_text}"  # e.g. "403 ACCESS_REFUSED - Login was refused ..."
    if type(exc).__module__.startswith("redis.") and type(exc).__name__ in (
        "AuthenticationError",
        "AuthorizationError",
    ):
        return str(exc)
    return None
