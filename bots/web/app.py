"""The service's one aiohttp application: probes, pages, static files, and what every page shares.

    app = web_app(settings.web, service.readiness, max_body_bytes=body_limit(settings))  # /healthz, /readyz, ...
    playground.mount(app)                              # pages add their routes before the server starts

What every page gets from here:
- security headers on every response (security.py: CSP without inline scripts, no framing, no sniffing);
- an encrypted session cookie (sessions.py) and the CSRF check on every state-changing request (csrf.py);
- a cap on a request's body (`max_body_bytes`: the largest image prompt a visitor may upload, plus the form
  around it); a larger body is answered with a plain 413 page before any of it reaches a handler;
- Jinja2 templates from bots/web/templates/ (aiohttp-jinja2, autoescaped) on the layout `base.html` (blocks
  `title`, `head`, `header`, `content`, `scripts`); `await render_page(request, template, context)` renders one
  with `request`, `csrf_token` and `csrf_field()` (for its forms) added, `await error_page(request, status, text)`
  a plain refusal;
- static files under /static/ from bots/web/static/ (`static_url("name")` in templates), no build step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_session import get_session

from bots import messages
from bots.web.csrf import csrf_field, csrf_token, install_csrf
from bots.web.ops import Readiness, add_ops_routes
from bots.web.security import install_security_headers
from bots.web.sessions import install_sessions
from config.settings import Settings, WebSettings
from engine.input_images import too_large

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
STATIC_PREFIX = "/static/"
FORM_MARGIN_BYTES = 256 * 1024
"""Room in a request's body beside an uploaded image: the other form fields and the multipart framing."""
MAX_BODY_BYTES: web.AppKey[int] = web.AppKey("max_body_bytes", int)


def body_limit(settings: Settings) -> int:
    """The largest request body taken: an image prompt at its byte limit, with the form around it."""
    return settings.image_prompts.max_bytes + FORM_MARGIN_BYTES


def web_app(settings: WebSettings, readiness: Readiness, *, max_body_bytes: int = 1024**2) -> web.Application:
    app = web.Application(client_max_size=max_body_bytes)
    app[MAX_BODY_BYTES] = max_body_bytes
    install_security_headers(app)
    install_sessions(app, settings)  # before the CSRF check, which reads the session
    app.middlewares.append(refuse_large_bodies)  # outside the CSRF check: that is where a form is read first
    install_csrf(app, settings)
    install_templates(app)
    app.router.add_static(STATIC_PREFIX, STATIC_DIR, name="static", append_version=True)
    add_ops_routes(app, readiness)
    return app


def install_templates(app: web.Application) -> jinja2.Environment:
    environment = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,  # a misspelt variable is an error in tests, not an empty string
    )
    environment.globals["static_url"] = _static_url
    return environment


@jinja2.pass_context
def _static_url(context: jinja2.runtime.Context, name: str) -> str:
    """The file's URL with a version query of its contents' hash, so browsers never run a stale script."""
    request: web.Request = context["request"]
    return str(request.app.router["static"].url_for(filename=name))


async def render_page(
    request: web.Request, template: str, context: dict[str, Any], *, status: int = 200
) -> web.Response:
    """Render `template` with the session's CSRF token (made now if the session has none: the session cookie is
    then set on this response). Only pages rendered here touch the session; probes and static files never do."""
    token = csrf_token(await get_session(request))
    page = {"request": request, "csrf_token": token, "csrf_field": lambda: csrf_field(token)} | context
    response = aiohttp_jinja2.render_template(template, request, page, status=status)
    response.headers["Cache-Control"] = "no-store"  # pages carry the session's own data and its CSRF token
    return response


async def error_page(request: web.Request, status: int, text: str) -> web.Response:
    """A plain page saying what went wrong, in words meant for people: no exception names, paths or traces."""
    return await render_page(request, "error.html", {"status": status, "message": text}, status=status)


@web.middleware
async def refuse_large_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A body over the cap is refused with the chat's words for a file over the byte limit, not aiohttp's bare
    413: at once when its declared length says so, otherwise when reading it passes the cap (aiohttp stops
    there). Nothing else happens for such a request."""
    limit = request.app[MAX_BODY_BYTES]
    try:
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        upload_limit = max(limit - FORM_MARGIN_BYTES, 0)
        response = await error_page(request, 413, messages.invalid_request(str(too_large(upload_limit))))
        response.force_close()  # the rest of the body is never read: the connection cannot carry another request
        return response
