"""Cross-site request forgery: every state-changing request (POST, PUT, PATCH, DELETE) must come from this site's
own pages. Two checks, both required:

- Origin: the browser's `Origin` header (or, where a browser leaves it out, the `Referer`'s origin) must be this
  site's origin, `web.public_url` when set, otherwise the request's own scheme and host (which a page on another
  site cannot choose). A request naming neither passes to the second check alone.
- Token: a random token kept in the session, sent back as the form field `csrf_token` (every form renders
  `{{ csrf_field() }}`) or the `X-CSRF-Token` header (scripts read it from `<meta name="csrf-token">`), compared in
  constant time. A request without a session has no token to match, so it is refused too.

A refusal is a 403 with a plain page and changes nothing. Install the middleware after the session middleware:

    install_sessions(app, settings.web)
    install_csrf(app, settings.web)
"""

from __future__ import annotations

import hmac
import logging
import secrets

import yarl
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import Session, get_session
from markupsafe import Markup, escape

from config.settings import WebSettings

log = logging.getLogger(__name__)

SESSION_KEY = "csrf_token"
FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
PUBLIC_ORIGIN: web.AppKey[str] = web.AppKey("public_origin", str)
FORBIDDEN_TEXT = "This form has expired or did not come from this site. Reload the page and try again."


class CsrfRefused(web.HTTPForbidden):
    """A state-changing request failed the origin or token check."""


def install_csrf(app: web.Application, settings: WebSettings) -> None:
    app[PUBLIC_ORIGIN] = origin_of(settings.public_url) if settings.public_url else ""
    app.middlewares.append(csrf_middleware)


def csrf_token(session: Session) -> str:
    """The session's token, made on first use (a page that renders a form makes it)."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def csrf_field(token: str) -> Markup:
    """The hidden form field carrying `token`."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(FORM_FIELD, escape(token))


@web.middleware
async def csrf_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method not in SAFE_METHODS:
        await check_csrf(request)
    return await handler(request)


async def check_csrf(request: web.Request) -> None:
    """Raise CsrfRefused unless the request passes both checks (the middleware calls this for every unsafe
    method; a handler of a safe method that still changes something may call it too)."""
    expected = request.app.get(PUBLIC_ORIGIN) or f"{request.scheme}://{request.host}"
    sent_from = _claimed_origin(request)
    if sent_from is not None and sent_from != expected.lower():
        log.warning("refused a %s %s from origin %.100s", request.method, request.path, sent_from)
        raise CsrfRefused(text=FORBIDDEN_TEXT)
    session = await get_session(request)
    token = session.get(SESSION_KEY)
    sent: object = request.headers.get(HEADER)
    if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = (await request.post()).get(FORM_FIELD)  # parsed once: the handler's request.post() reuses it
    if not isinstance(token, str) or not isinstance(sent, str) or not hmac.compare_digest(token, sent):
        log.info("refused a %s %s without a valid CSRF token", request.method, request.path)
        raise CsrfRefused(text=FORBIDDEN_TEXT)


def _claimed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin.strip().lower()  # "null" (a sandboxed or privacy-stripped origin) never matches
    referer = request.headers.get("Referer")
    return origin_of(referer) if referer else None


def origin_of(url: str) -> str:
    """scheme://host[:port], lower-case, the port left out when it is the scheme's default (as browsers send it)."""
    try:
        parsed = yarl.URL(url.strip())
    except ValueError:
        return "invalid"
    if not parsed.scheme or not parsed.host:
        return "invalid"
    port = "" if parsed.port is None or parsed.is_default_port() else f":{parsed.port}"
    return f"{parsed.scheme}://{parsed.host}{port}".lower()
