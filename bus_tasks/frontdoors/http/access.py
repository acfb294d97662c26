"""Who calls over HTTP (SPEC 16): the identity of a bearer token (``http_tokens``), when
``authorization = "on"``. The HTTP front door asserts it on the calls it makes for the caller;
the aggregator decides. No token: 401; a call the role does not allow: 403 (from -32011).

Browsers' EventSource cannot send a header: GET requests may carry the token in the cookie
``bus_tasks_token`` instead (SameSite=Strict, set by the web view). Control (POST) takes the
header only, so that no other site can make a browser stop a task.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import SecretStr

from bus_tasks.authorization import NO_ROLES, Roles
from bus_tasks.frontdoors.http.answers import Refused

TOKEN_COOKIE = "bus_tasks_token"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="bus_tasks"'}


@dataclass(frozen=True)
class HttpAccess:
    """Bearer tokens (identity -> token, secrets) and the roles the identities hold."""

    tokens: Mapping[str, SecretStr] = field(default_factory=dict, repr=False)
    roles: Roles = NO_ROLES

    def identity_of(self, token: str) -> str | None:
        """The identity whose token is ``token``; compared in constant time with every one."""
        given = token.encode()
        found = None
        for identity, secret in self.tokens.items():
            if hmac.compare_digest(given, secret.get_secret_value().encode()):
                found = identity
        return found

    def caller(self, request: web.Request, *, required: bool = True) -> str | None:
        """The identity of ``request``'s token (the header; for a GET, else the cookie).

        Raises:
            Refused: 401 for a token of nobody, or for no token when ``required``.
        """
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        token = given.strip() if scheme.lower() == "bearer" else ""
        if not token and request.method == "GET":
            token = request.cookies.get(TOKEN_COOKIE, "")
        if not token:
            if required:
                raise Refused(401, "General Exception: this needs Authorization: Bearer <token>", CHALLENGE)
            return None
        identity = self.identity_of(token)
        if identity is None:
            raise Refused(401, "General Exception: the token is nobody's (http_tokens)", CHALLENGE)
        return identity
