"""A running Slack rig for tests: the stand-in Slack, the real engine (tiny pipeline), the real conversation
layer and the Slack adapter on a free loopback port, plus Slack's side (signed requests) to talk to it."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from bots.conversation import Conversation
from bots.conversation.review import POST_LEASE_S
from bots.service import Service
from bots.slack.adapter import EVENTS_PATH, SlackAdapter
from config.settings import Settings
from engine.local import LocalJobQueue
from engine.worker.runner import PipelineRunner
from moderation.admission import Admission
from tests.standins.slack_requests import SlackSender
from tests.standins.slack_server import CompletedUpload, PostedMessage, SlackStandIn
from tests.support import make_settings, rig_conversation_options

SIGNING_SECRET = "test-signing-secret-0123456789"
MODERATOR_CHANNEL = "CMODS"
MODERATOR = "UMOD"
GROUP_MODERATOR = "UGROUPMOD"
MODERATOR_GROUP = "SMODERATORS"


def slack_settings(
    tmp_path: Path,
    model_dir: Path | str,
    standin: SlackStandIn,
    *,
    mode: str = "http",
    base_size: int = 128,
    steps: int = 1,
    **engine: Any,
) -> Settings:
    settings = make_settings(tmp_path, model_dir, base_size=base_size, steps=steps, **engine)
    slack = replace(
        settings.slack,
        bot_token=standin.bot_token,
        signing_secret=SIGNING_SECRET,
        app_token=standin.app_token,
        mode=mode,
        api_base=standin.api_url,
        host="127.0.0.1",
        port=0,
        moderator_channel_id=MODERATOR_CHANNEL,
        moderator_user_ids=[MODERATOR],
        moderator_usergroup_id=MODERATOR_GROUP,
    )
    return replace(settings, slack=slack)


@dataclass
class SlackRig:
    standin: SlackStandIn
    settings: Settings
    engine: LocalJobQueue
    conversation: Conversation
    adapter: SlackAdapter
    sender: SlackSender
    admission: Admission | None = None

    service: Service | None = None

    async def stop(self) -> None:
        """Stop like `imagine serve` does (Service.close): adapter first, then the conversation, then the engine,
        which hands unfinished jobs back to its journal."""
        await self.sender.__aexit__(None, None, None)
        assert self.service is not None
        await self.service.close()

    # ---- what a test waits for -------------------------------------------------------------------------

    async def settled(self) -> None:
        """Every acknowledged request handled: admitted and journaled as a job, held, or refused."""
        await self.adapter.intake.settled()

    async def uploads(self, count: int = 1, within: float = 120.0) -> list[CompletedUpload]:
        await self.standin.wait_for(lambda: len(self.standin.completed) >= count, within)
        return self.standin.completed

    async def message_saying(self, text: str, within: float = 120.0) -> PostedMessage:
        def found() -> PostedMessage | None:
            return next((m for m in self.standin.messages.values() if text in m.text), None)

        return await self.standin.wait_for(found, within)

    async def ephemeral_saying(self, text: str, within: float = 60.0) -> Any:
        def found() -> Any:
            return next((m for m in self.standin.ephemerals if text in m.text), None)

        return await self.standin.wait_for(found, within)


async def start_rig(
    settings: Settings,
    standin: SlackStandIn,
    *,
    runner_factory: Callable[[], PipelineRunner] | None = None,
    admission: Admission | None = None,
    slow_start: bool = False,
    redelivery_interval_s: float = 60.0,
    review_poll_s: float = 3600.0,
    review_post_lease_s: float = POST_LEASE_S,
) -> SlackRig:
    """Start in `imagine serve`'s order: engine; adapter built (registers the platform) and started (resumes
    stored requests, takes new ones); conversation started (follows resumed jobs, delivers undelivered ones).
    `slow_start`: stored requests are all handled before the conversation starts (a slow connect to Slack)."""
    service = Service(
        settings,
        [SlackAdapter],
        runner_factory=runner_factory,
        admission=admission,
        conversation_options={
            **rig_conversation_options(redelivery_interval_s, review_poll_s),
            "review_post_lease_s": review_post_lease_s,
        },
    )
    try:
        await service.start_adapters()
        adapter = service.adapters[0]
        assert isinstance(adapter, SlackAdapter) and service.conversation is not None
        if slow_start:
            await adapter.intake.settled()
        await service.resume()
    except BaseException:
        await service.close()
        raise
    endpoint = f"http://127.0.0.1:{adapter.port}{EVENTS_PATH}"
    sender = await SlackSender(endpoint, SIGNING_SECRET, standin).__aenter__()
    return SlackRig(standin, settings, service.engine, service.conversation, adapter, sender, admission, service)


def jpeg_sizes(upload: CompletedUpload) -> list[tuple[str, tuple[int, int]]]:
    """(format, size) of every file in one upload, opened with Pillow."""
    result = []
    for file in upload.files:
        assert file.data is not None
        with Image.open(io.BytesIO(file.data)) as image:
            result.append((str(image.format), image.size))
    return result
