"""The aiohttp server that `imagine serve` runs beside the chat adapters: started first, closed last."""

from __future__ import annotations

import logging

from aiohttp import web

from bots.errors import AdapterStartError
from bots.process_tuning import LISTEN_BACKLOG
from config.settings import WebSettings

log = logging.getLogger(__name__)


class WebStartError(AdapterStartError):
    """The web server could not listen (the port is taken, the host is not this machine's)."""


class WebServer:
    def __init__(self, settings: WebSettings, app: web.Application) -> None:
        self._settings = settings
        self._app = app
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        """The port it listens on once started (the configured one, or the one picked for port 0)."""

    async def start(self) -> None:
        runner = web.AppRunner(self._app, access_log=None)  # one line per scrape of /metrics would drown the log
        await runner.setup()
        site = web.TCPSite(runner, self._settings.host, self._settings.port, backlog=LISTEN_BACKLOG)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            where = f"{self._settings.host}:{self._settings.port}"
            raise WebStartError(
                f"the web server cannot listen on {where} ({exc.strerror or exc}): set IMAGINE_WEB__PORT to a free "
                "port, or IMAGINE_WEB__ENABLED=false to run without it"
            ) from None
        self._runner = runner
        self.port = _bound_port(runner)
        log.info("web server on http://%s:%s (/healthz, /readyz, /metrics)", self._settings.host, self.port)

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


def _bound_port(runner: web.AppRunner) -> int:
    address = runner.addresses[0]
    return int(address[1])
