"""A running Discord rig for tests: the stand-in Discord, the real engine (tiny pipeline), the real conversation
layer and the Discord adapter (real discord.py) logged in to the stand-in."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

from PIL import Image

from bots.conversation import Conversation
from bots.discord.adapter import DiscordAdapter
from bots.service import Service
from config.settings import Settings
from engine.local import LocalJobQueue
from engine.screening import ImageScreener
from engine.worker.runner import PipelineRunner
from moderation.admission import Admission
from tests.standins.discord_server import DiscordStandIn, StoredMessage
from tests.support import make_settings, rig_conversation_options


@dataclass
class FakeClock:
    """The adapter's wall clock, so a test can age interaction tokens past 15 minutes without waiting."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def discord_settings(
    tmp_path: Path,
    model_dir: Path | str,
    standin: DiscordStandIn,
    *,
    base_size: int = 128,
    steps: int = 1,
    **engine: Any,
) -> Settings:
    settings = make_settings(tmp_path, model_dir, base_size=base_size, steps=steps, **engine)
    discord = replace(
        settings.discord,
        token=standin.token,
        api_base=standin.api_base,
        gateway_url=standin.gateway_url,
        moderator_channel_id=int(standin.moderator_channel_id),
        moderator_role_ids=[int(standin.moderator_role.id)],
    )
    return replace(settings, discord=discord)


@dataclass
class DiscordRig:
    standin: DiscordStandIn
    settings: Settings
    engine: LocalJobQueue
    conversation: Conversation
    adapter: DiscordAdapter
    clock: FakeClock
    admission: Admission | None = None

    service: Service | None = None

    async def stop(self) -> None:
        """Stop like `imagine serve` does (Service.close): adapter, conversation, then the engine, which hands
        unfinished jobs back to its journal."""
        assert self.service is not None
        await self.service.close()

    # ---- what a test waits for -------------------------------------------------------------------------

    async def images_messages(
        self, count: int = 1, channel_id: str | None = None, within: float = 120.0
    ) -> list[StoredMessage]:
        def found() -> list[StoredMessage] | None:
            messages = self.standin.messages_with_files(channel_id)
            return messages if len(messages) >= count else None

        return await self.standin.wait_until(found, within, what=f"{count} message(s) with images")

    async def message_saying(self, text: str, *, ephemeral: bool | None = None, within: float = 60.0) -> StoredMessage:
        def found() -> StoredMessage | None:
            return next(
                (
                    m
                    for m in self.standin.messages.values()
                    if text in m.content and not m.deleted and (ephemeral is None or m.ephemeral == ephemeral)
                ),
                None,
            )

        return await self.standin.wait_until(found, within, what=f"a message saying {text!r}")


async def start_rig(
    settings: Settings,
    standin: DiscordStandIn,
    *,
    runner_factory: Callable[[], PipelineRunner] | None = None,
    screener: ImageScreener | None = None,
    moderated: bool = False,
    clock: FakeClock | None = None,
    redelivery_interval_s: float = 60.0,
) -> DiscordRig:
    """Start in `imagine serve`'s order: engine, admission, adapter (registers the platform), conversation
    (resumes). With `moderated`, the real admission (limits, prompt rules, review queue) sits in front."""
    admission = await Admission.open(settings, warm_up=False) if moderated else None
    clock = clock or FakeClock()
    service = Service(
        settings,
        [partial(DiscordAdapter, clock=clock, guild_ready_timeout=0.05)],
        runner_factory=runner_factory,
        screener=screener,
        admission=admission,
        conversation_options=rig_conversation_options(redelivery_interval_s),
    )
    try:
        await service.start()
    except BaseException:
        await service.close()
        raise
    assert service.conversation is not None
    adapter = service.adapters[0]
    assert isinstance(adapter, DiscordAdapter)
    return DiscordRig(standin, settings, service.engine, service.conversation, adapter, clock, admission, service)


def jpeg_sizes(message: StoredMessage) -> list[tuple[str, tuple[int, int]]]:
    """(format, size) of every file attached to a message, opened with Pillow."""
    result = []
    for upload in message.files:
        with Image.open(io.BytesIO(upload.data)) as image:
            result.append((str(image.format), image.size))
    return result


def button_labels(message: StoredMessage) -> list[list[str]]:
    return [[c.get("label", "") for c in row["components"]] for row in message.payload.get("components", [])]


def custom_ids(message: StoredMessage) -> list[str]:
    return message.custom_ids
