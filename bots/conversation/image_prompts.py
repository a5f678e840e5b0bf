"""An image prompt's picture, from wherever an adapter found it to a checked PNG the engine can start from.

Platform-neutral: Discord and Slack describe an attachment as an `ImageSource` (a URL on their own file host,
the origins allowed for it, the headers to fetch it with); the web playground can give the uploaded bytes. Then,
before any GPU time: the download (bots/downloads.py: allowed hosts, a timeout, a byte cap while streaming), the
checks and the fitting to the job's size (engine/input_images.py, in an executor), the same image screening as
outputs get (moderation/images.py, in an executor), and the store to disk (`image_prompts.input_dir`), where the
workers read it. A flagged input is stored too, beside a withheld (blurred) copy for the moderators.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from bots.downloads import DownloadTooLarge, download
from config.settings import Settings
from engine.input_images import InputImageLimits, check_input_image, save_input_image, too_large
from engine.screening import ImageScreener, ScreeningResult
from moderation.images import withheld_version


@dataclass(frozen=True)
class ImageSource:
    """Where the picture of an image prompt comes from, as the adapter saw it."""

    url: str = ""
    allowed_origins: tuple[str, ...] = ()
    """The platform's own file hosts (`image_prompts.<platform>_file_origins`): the only places `url` may be on."""
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """How to fetch it (Slack: the bot token as a Bearer); never logged, never journaled."""
    declared_bytes: int | None = None
    """The size the platform announced, if any: a file declared too large is not even fetched."""
    data: bytes | None = field(default=None, repr=False)
    """The bytes themselves, when they are already here (an upload to the web playground)."""


@dataclass(frozen=True)
class CheckedInput:
    path: str
    """The checked picture as a PNG at the job's size."""
    screening: ScreeningResult
    withheld_path: str | None = None
    """For a flagged picture: what moderators are shown (blurred or a placeholder, `moderation.withheld_image`)."""

    @property
    def flagged(self) -> bool:
        return self.screening.flagged


class InputImages:
    def __init__(self, settings: Settings, screener: ImageScreener | None) -> None:
        config = settings.image_prompts
        self._config = config
        self._limits = InputImageLimits(max_bytes=config.max_bytes, max_pixels=config.max_pixels)
        self._folder = Path(config.input_dir or Path(settings.engine.output_dir) / "inputs").expanduser()
        self._screener = screener
        self._withheld_mode = settings.moderation.withheld_image

    async def check(self, source: ImageSource, size: tuple[int, int]) -> CheckedInput:
        """Fetch, check, screen and store. Raises DownloadRefused or InvalidImage (both with a user's message)."""
        data = source.data if source.data is not None else await self._download(source)
        loop = asyncio.get_running_loop()
        picture = await loop.run_in_executor(None, check_input_image, data, self._limits, size)
        screening = ScreeningResult(flagged=False)
        if self._screener is not None:
            screening = await loop.run_in_executor(None, self._screener, picture)
        path = await loop.run_in_executor(None, save_input_image, picture, self._folder)
        withheld = None
        if screening.flagged:
            withheld = await loop.run_in_executor(None, self._save_withheld, picture)
        return CheckedInput(path=path, screening=screening, withheld_path=withheld)

    async def _download(self, source: ImageSource) -> bytes:
        if source.declared_bytes is not None and source.declared_bytes > self._limits.max_bytes:
            raise too_large(self._limits.max_bytes)
        try:
            return await download(
                source.url,
                allowed_origins=source.allowed_origins,
                max_bytes=self._limits.max_bytes,
                timeout_s=self._config.download_timeout_s,
                headers=source.headers,
            )
        except DownloadTooLarge:
            raise too_large(self._limits.max_bytes) from None

    def _save_withheld(self, picture: Image.Image) -> str:
        return save_input_image(withheld_version(picture, self._withheld_mode), self._folder / "withheld")
