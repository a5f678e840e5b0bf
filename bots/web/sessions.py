"""Browser sessions: an encrypted cookie (aiohttp-session's `EncryptedCookieStorage`, Fernet from cryptography).

The whole session lives in the cookie, encrypted and authenticated with `web.session_secret`, so nothing about it
is stored server-side and a cookie older than `web.session_max_age_s` is refused on its timestamp. The cookie is
HttpOnly (no script reads it), SameSite=Lax (a cross-site form post does not carry it) and Secure when
`web.public_url` is https (the service behind a TLS proxy). Without a secret a key is made per process and a
warning logged: every session then ends when the process does.

    install_sessions(app, settings.web)            # before any middleware that reads the session
    session = await get_session(request)           # aiohttp_session's, re-exported here
    session = await fresh_session(request)         # after a sign-in: a new session, nothing carried over
"""

from __future__ import annotations

import logging
import warnings

from aiohttp import web
from aiohttp_session import Session, get_session, new_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

from config.errors import ConfigError
from config.settings import WebSettings

__all__ = ["COOKIE_NAME", "fresh_session", "get_session", "install_sessions", "session_key"]

log = logging.getLogger(__name__)
# aiohttp-session 2.12 keeps its state under string request keys, which aiohttp 3.14 warns about: not ours to fix.
warnings.filterwarnings(
    "ignore", "It is recommended to use web.RequestKey instances", web.NotAppKeyWarning, "aiohttp_session"
)
COOKIE_NAME = "imagine_session"
MAKE_A_KEY = 'python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'


def install_sessions(app: web.Application, settings: WebSettings) -> None:
    app.middlewares.append(session_middleware(session_storage(settings)))


def session_storage(settings: WebSettings) -> EncryptedCookieStorage:
    return EncryptedCookieStorage(
        session_key(settings),
        cookie_name=COOKIE_NAME,
        max_age=int(settings.session_max_age_s),
        httponly=True,
        samesite="Lax",
        secure=settings.public_url.lower().startswith("https://"),
    )


def session_key(settings: WebSettings) -> Fernet:
    """The configured key; or, when none is, a new one for this process (and a warning saying what that means)."""
    if not settings.session_secret:
        log.warning(
            "web.session_secret is not set: browser sessions will not survive a restart (set "
            "IMAGINE_WEB__SESSION_SECRET to a Fernet key; make one with %s)",
            MAKE_A_KEY,
        )
        return Fernet(Fernet.generate_key())
    try:
        return Fernet(settings.session_secret.strip().encode())
    except ValueError:  # never name the value: it is a secret, even when it is a wrong one
        raise ConfigError(
            "invalid value for web.session_secret: it must be a Fernet key (32 url-safe base64-encoded bytes); "
            f"make one with {MAKE_A_KEY}"
        ) from None


async def fresh_session(request: web.Request) -> Session:
    """A new, empty session replacing the browser's current one (call it on sign-in, against session fixation)."""
    return await new_session(request)
