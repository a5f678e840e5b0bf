"""A playground visitor: a local identity per browser session, and that session's recent requests.

The identity is a random id kept in the encrypted session cookie (bots/web/sessions.py): the requester
`web:<id>` that admission rate-limits, moderates and strikes like a chat user. Every visitor counts towards one
server, `playground`, so `limits.server_prompts_per_window` caps the playground as a whole (a visitor who clears
their cookies gets a new identity, not more of the playground).

The session also remembers the browser's recent jobs (their ids) and its prompts held for review (the request's
ticket and the prompt's start), which is what the playground's history shows: nothing about other visitors.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from aiohttp_session import Session

from bots import messages
from engine.requests import Requester

PLATFORM = "web"
SERVER_ID = "playground"
VISITOR_KEY = "visitor"
JOBS_KEY = "jobs"
HELD_KEY = "held"
HISTORY_SIZE = 12
HELD_SIZE = 5
HELD_PROMPT_CHARS = 80
"""What the cookie keeps of a held prompt, to show it in the history (the cookie must stay well under 4 kB)."""


@dataclass(frozen=True)
class HeldPrompt:
    ticket: str
    prompt: str


def visitor(session: Session) -> Requester:
    """The session's identity, made on its first page."""
    visitor_id = session.get(VISITOR_KEY)
    if not isinstance(visitor_id, str) or not visitor_id.isalnum():
        visitor_id = "v" + secrets.token_hex(8)
        session[VISITOR_KEY] = visitor_id
    return requester_for(visitor_id)


def known_visitor(session: Session) -> Requester | None:
    """The session's identity if it has one (requests that are not pages never make one)."""
    visitor_id = session.get(VISITOR_KEY)
    return requester_for(visitor_id) if isinstance(visitor_id, str) and visitor_id.isalnum() else None


def requester_for(visitor_id: str) -> Requester:
    return Requester(platform=PLATFORM, user_id=visitor_id, server_id=SERVER_ID, display_name=messages.WEB_VISITOR_NAME)


def owns(requester: Requester, owner: Requester) -> bool:
    """Whether `requester` (a job's) is this visitor: the platform and the id, whatever the job's other fields."""
    return requester.platform == PLATFORM and requester.key == owner.key


def recent_jobs(session: Session) -> list[str]:
    jobs = session.get(JOBS_KEY)
    return [job for job in jobs if isinstance(job, str)] if isinstance(jobs, list) else []


def remember_job(session: Session, job_id: str) -> None:
    session[JOBS_KEY] = [job_id, *(job for job in recent_jobs(session) if job != job_id)][:HISTORY_SIZE]


def held_prompts(session: Session) -> list[HeldPrompt]:
    held = session.get(HELD_KEY)
    if not isinstance(held, list):
        return []
    return [HeldPrompt(str(entry[0]), str(entry[1])) for entry in held if _is_pair(entry)]


def remember_held(session: Session, ticket: str, prompt: str) -> None:
    kept = [[entry.ticket, entry.prompt] for entry in held_prompts(session)]
    session[HELD_KEY] = [[ticket, prompt[:HELD_PROMPT_CHARS]], *kept][:HELD_SIZE]


def forget_held(session: Session, ticket: str) -> None:
    session[HELD_KEY] = [[entry.ticket, entry.prompt] for entry in held_prompts(session) if entry.ticket != ticket]


def _is_pair(entry: Any) -> bool:
    return isinstance(entry, list) and len(entry) == 2 and all(isinstance(part, str) for part in entry)
