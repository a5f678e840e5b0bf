"""The connected platforms: how to rebuild a requester's Replier, and where their moderators are."""

from __future__ import annotations

from dataclasses import dataclass

from bots.contract import ModeratorChannel, Replier, RepliersFor, ReplyContext
from engine.api import JobQueue
from engine.requests import GenerationRequest


@dataclass
class Platform:
    replier_for: RepliersFor
    moderators: ModeratorChannel | None

    def replier(self, context: ReplyContext) -> Replier:
        return self.replier_for(context.place)


class Platforms:
    def __init__(self) -> None:
        self._entries: dict[str, Platform] = {}

    def add(self, name: str, replier_for: RepliersFor, moderators: ModeratorChannel | None) -> None:
        self._entries[name] = Platform(replier_for, moderators)

    def get(self, name: str) -> Platform | None:
        return self._entries.get(name)

    def names(self) -> list[str]:
        return list(self._entries)

    def items(self) -> list[tuple[str, Platform]]:
        return list(self._entries.items())


async def journal_place(jobs: JobQueue, job_id: str, replier: Replier) -> None:
    """Keep the job's journaled place in step with the replier's (see `Replier.journal_place`)."""
    place = replier.journal_place()
    if place is not None:
        await jobs.update_delivery(job_id, {"place": place})


def reply_context(request: GenerationRequest) -> ReplyContext:
    return ReplyContext.from_dict(request.delivery)
