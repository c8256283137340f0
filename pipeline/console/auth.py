"""Who may open the console (CONTRACT §8): ``MA_CONSOLE_TOKEN``, or a key of the rules file with
the ``console`` scope.

API clients send ``Authorization: Bearer <token>``. A browser opens ``/console?token=<token>``
once: it gets an HttpOnly, SameSite=Strict session cookie and a redirect to the same page
without the token (so the token is in no history or referrer). Sessions live in this process
(a restart asks again) for ``SESSION_SECONDS``.

Without a token or a console key the console is open only while the worker API listens on
loopback; bound beyond it, nothing answers until one is configured.

Example::

    guard = ConsoleGuard(settings, rules)
    refused = guard.refuse(request)      # None, or the 401 / 403 / redirect to answer instead
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlencode

from aiohttp import web

from pipeline.rules import RulesWatcher
from pipeline.rules.models import CONSOLE, is_loopback
from pipeline.settings import Settings

COOKIE = "ma_console"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000


class ConsoleGuard:
    """``on_forbidden(path, message)``: told of each key refused for lacking the ``console``
    scope (the console's worker dead-letters it, as every refusal of a scope is)."""

    def __init__(
        self,
        settings: Settings,
        rules: RulesWatcher,
        on_forbidden: Callable[[str, str], None] | None = None,
    ) -> None:
        self._on_forbidden = on_forbidden
        token = settings.console_token.get_secret_value() if settings.console_token else ""
        self._token = hashlib.sha256(token.encode()).digest() if token else None
        self._rules = rules
        self._loopback = is_loopback(settings.worker_web_host)
        self._sessions: dict[str, float] = {}

    def _console_keys(self) -> bool:
        return any(CONSOLE in key.scopes for key in self._rules.rules.keys)

    @property
    def open(self) -> bool:
        """No credential configured and only this machine can reach the API."""
        return self._token is None and not self._console_keys() and self._loopback

    def valid(self, secret: str) -> bool:
        """A console token or the secret of a key holding ``console`` (constant time)."""
        if not secret:
            return False
        matched = False
        if self._token is not None:
            digest = hashlib.sha256(secret.encode()).digest()
            matched = hmac.compare_digest(digest, self._token)
        credential = self._rules.rules.keyring.identify(secret)
        return matched or (credential is not None and credential.allows(CONSOLE))

    def _session(self, request: web.Request) -> bool:
        session = request.cookies.get(COOKIE, "")
        expires = self._sessions.get(session)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._sessions[session]
            return False
        return True

    def refuse(self, request: web.Request) -> web.StreamResponse | None:
        """None when the request may see the console; else what to answer instead."""
        token = request.query.get("token")
        if token is not None:
            if not self.valid(token):
                return self._forbidden(request, token) or _unauthorized("the token is not valid")
            return self._login(request)
        if self.open or self._session(request):
            return None
        scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            if self.valid(secret.strip()):
                return None
            if (forbidden := self._forbidden(request, secret.strip())) is not None:
                return forbidden
        if self._token is None and not self._console_keys():
            return _unauthorized(
                "the console needs MA_CONSOLE_TOKEN (or a key with the console scope) when "
                "the worker API listens beyond loopback"
            )
        return _unauthorized(
            "open /console?token=<MA_CONSOLE_TOKEN> or send Authorization: Bearer <token>"
        )

    def _forbidden(self, request: web.Request, secret: str) -> web.Response | None:
        """403 naming the scope for a key of ours without ``console`` (CONTRACT §1), else
        None (not a key of ours: 401)."""
        credential = self._rules.rules.keyring.identify(secret) if secret else None
        if credential is None or credential.allows(CONSOLE):
            return None
        message = f"scope {CONSOLE} required: key {credential.id!r} does not have it"
        if self._on_forbidden is not None:
            self._on_forbidden(request.path, message)
        return web.Response(
            status=403, text=f"403 Forbidden: {message}\n", headers={"Cache-Control": "no-store"}
        )

    def _login(self, request: web.Request) -> web.StreamResponse:
        """A new session cookie and a redirect to the same page without the token."""
        if len(self._sessions) >= MAX_SESSIONS:
            now = time.monotonic()
            self._sessions = {k: v for k, v in self._sessions.items() if v > now}
        session = secrets.token_urlsafe(32)
        self._sessions[session] = time.monotonic() + SESSION_SECONDS
        query = [(k, v) for k, v in request.query.items() if k != "token"]
        location = request.path + (f"?{urlencode(query)}" if query else "")
        response = web.HTTPSeeOther(location)
        response.set_cookie(
            COOKIE,
            session,
            max_age=SESSION_SECONDS,
            path="/console",
            httponly=True,
            samesite="Strict",
        )
        response.headers["Cache-Control"] = "no-store"
        return response


def _unauthorized(why: str) -> web.Response:
    return web.Response(
        status=401,
        text=f"401 Unauthorized: {why}\n",
        headers={"WWW-Authenticate": 'Bearer realm="console"', "Cache-Control": "no-store"},
    )
