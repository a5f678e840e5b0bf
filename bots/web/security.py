"""Security headers on every response of the service's web server: pages, images, event streams, errors, probes.

The Content-Security-Policy allows scripts, styles, images and connections from this origin only: no inline
script, no `eval`, no plugin, no framing (also `X-Frame-Options: DENY` for older browsers). Pages therefore keep
their JavaScript in files under bots/web/static/ and their CSS in stylesheets; SVG presentation attributes
(`fill="…"`) are not CSS and need no exception.

They are set in aiohttp's `on_response_prepare` signal rather than in a middleware: it runs just before the headers
go out for every kind of response, including a stream a handler prepares itself (server-sent events) and the error
pages aiohttp makes for unknown paths, which a middleware sees too late or not at all.
"""

from __future__ import annotations

from aiohttp import web

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def install_security_headers(app: web.Application) -> None:
    app.on_response_prepare.append(add_security_headers)


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """A handler that set one of these itself (a stricter policy for one page) keeps its own."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
