"""The service's one aiohttp application: probes, pages, static files, and what every page shares.

    app = web_app(settings.web, service.readiness)   # /healthz, /readyz, /metrics, /static/, headers, sessions, CSRF
    playground.mount(app)                              # pages add their routes before the server starts

What every page gets from here:
- security headers on every response (security.py: CSP without inline scripts, no framing, no sniffing);
- an encrypted session cookie (sessions.py) and the CSRF check on every state-changing request (csrf.py);
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
from aiohttp_session import get_session

from bots.web.csrf import csrf_field, csrf_token, install_csrf
from bots.web.ops import Readiness, add_ops_routes
from bots.web.security import install_security_headers
from bots.web.sessions import install_sessions
from config.settings import WebSettings

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
STATIC_PREFIX = "/static/"


def web_app(settings: WebSettings, readiness: Readiness) -> web.Application:
    app = web.Application()
    install_security_headers(app)
    install_sessions(app, settings)  # before the CSRF check, which reads the session
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
