"""`imagine review ...`: the moderators' command line for the review queue, bans and strikes.

    imagine review list [--state pending|approved|rejected|expired|all] [--limit N] [--json]
    imagine review show ID [--json]
    imagine review approve ID [--reason TEXT]
    imagine review reject ID [--reason TEXT]          (the reason is shown to the requester)
    imagine review bans [--json]
    imagine review ban USER [--duration 3600|30m|2h|1d] [--reason TEXT]    (no --duration: until lifted)
    imagine review unban USER [--reason TEXT]
    imagine review clear-strikes USER
    imagine review audit [--limit N] [--target TARGET] [--json]

USER is a platform-qualified id such as discord:1234 or slack:U0123. Decisions only change the database: the
running `imagine serve` picks approved items up and generates them, and tells requesters about rejections.
Every action is written to the audit log as `cli:<login name>`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from bots.cli import EXIT_FAILURE
from bots.cli.arguments import positive_int
from bots.cli.store import with_database
from bots.errors import UsageError
from config.settings import Settings
from engine.serialize import request_to_dict
from moderation.audit import AuditLog
from moderation.errors import ReviewError, ReviewItemNotFound
from moderation.messages import duration
from moderation.review import ReviewItem, ReviewQueue, ReviewState
from moderation.strikes import StrikeBook
from storage.database import Database

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
STATES = [state.value for state in ReviewState] + ["all"]


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="review_command", required=True, parser_class=type(parser))

    listing = actions.add_parser("list", help="items in the review queue (pending by default)")
    listing.add_argument("--state", choices=STATES, default="pending")
    listing.add_argument("--limit", type=positive_int, default=50)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    show = actions.add_parser("show", help="one review item in full")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")

    for name, what in (("approve", "generate it for the requester"), ("reject", "tell the requester no")):
        decide = actions.add_parser(name, help=f"{name} a pending item ({what})")
        decide.add_argument("id")
        decide.add_argument("--reason", default="", help="why (a rejection's reason is shown to the requester)")

    bans = actions.add_parser("bans", help="bans in force")
    bans.add_argument("--json", action="store_true")

    ban = actions.add_parser("ban", help="ban a user (no --duration: until lifted)")
    ban.add_argument("user", type=_user_key, help="e.g. discord:1234 or slack:U0123")
    ban.add_argument("--duration", type=_duration, help="seconds, or 30m / 2h / 1d")
    ban.add_argument("--reason", default="")

    unban = actions.add_parser("unban", help="lift a user's bans")
    unban.add_argument("user", type=_user_key)
    unban.add_argument("--reason", default="")

    clear = actions.add_parser("clear-strikes", help="clear a user's strikes")
    clear.add_argument("user", type=_user_key)

    audit = actions.add_parser("audit", help="the moderation audit log, newest first")
    audit.add_argument("--limit", type=positive_int, default=50)
    audit.add_argument("--target", help="only entries about this user key or review:<id>")
    audit.add_argument("--json", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    settings = settings_loader()
    return asyncio.run(_with_db(settings, lambda db: _COMMANDS[args.review_command](args, settings, db)))


async def _with_db(settings: Settings, work: Callable[[Database], Awaitable[int]]) -> int:
    return await with_database(settings, lambda db: _reviewing(work(db)))


async def _reviewing(work: Awaitable[int]) -> int:
    """A review command's own errors: an unknown item is a usage error, any other one line on stderr."""
    try:
        return await work
    except ReviewItemNotFound as exc:
        raise UsageError(str(exc)) from None
    except ReviewError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (e.g. a container with an unnamed uid)
        return "cli:local"


def _queue(settings: Settings, db: Database) -> ReviewQueue:
    return ReviewQueue(db, expiry_s=settings.moderation.review_expiry_s)


async def _list(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    state = None if args.state == "all" else ReviewState(args.state)
    items = await _queue(settings, db).list(state, args.limit)
    for item in items:
        print(json.dumps(_item_dict(item), ensure_ascii=False) if args.json else _item_line(item))
    if not items and not args.json:
        print("no review items" if state is None else f"no {state.value} review items")
    return 0


async def _show(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    item = await _queue(settings, db).get(args.id)
    if args.json:
        print(json.dumps(_item_dict(item), ensure_ascii=False))
        return 0
    print(_item_line(item))
    for reason in item.verdict.reasons:
        print(f"  - {reason}")
    if item.decided_by:
        print(f"  decided by {item.decided_by}" + (f": {item.decision_reason}" if item.decision_reason else ""))
    return 0


async def _approve(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    item = await _queue(settings, db).approve(args.id, _actor(), args.reason)
    print(f"approved {item.id}: the serving process will generate it for {item.requester.key}")
    return 0


async def _reject(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    item = await _queue(settings, db).reject(args.id, _actor(), args.reason)
    print(f"rejected {item.id}: {item.requester.key} will be told")
    return 0


async def _bans(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    bans = await StrikeBook(db, settings.moderation).bans()
    now = time.time()
    for ban in bans:
        if args.json:
            print(json.dumps(asdict(ban), ensure_ascii=False))
            continue
        left = "until lifted" if ban.expires_at is None else f"{duration(ban.remaining_s(now) or 0)} left"
        pending = ", pending review" if ban.pending_review else ""
        print(f"{ban.user_key}  {left}{pending}  by {ban.created_by}: {ban.reason}")
    if not bans and not args.json:
        print("no bans in force")
    return 0


async def _ban(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    ban = await StrikeBook(db, settings.moderation).ban(
        args.user, _actor(), reason=args.reason, duration_s=args.duration
    )
    length = "until lifted" if ban.expires_at is None else f"for {duration(args.duration)}"
    print(f"banned {ban.user_key} {length}")
    return 0


async def _unban(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    lifted = await StrikeBook(db, settings.moderation).unban(args.user, _actor(), args.reason)
    print(f"lifted {lifted} ban(s) of {args.user}" if lifted else f"{args.user} was not banned")
    return 0


async def _clear_strikes(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    cleared = await StrikeBook(db, settings.moderation).clear_strikes(args.user, _actor())
    print(f"cleared {cleared} strike(s) of {args.user}")
    return 0


async def _audit(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    for entry in await AuditLog(db).entries(args.limit, target=args.target):
        if args.json:
            print(json.dumps(asdict(entry), ensure_ascii=False))
        else:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.created_at))
            detail = f": {entry.detail}" if entry.detail else ""
            print(f"{when}Z  {entry.actor}  {entry.action} {entry.target}  [{entry.outcome}]{detail}")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings, Database], Awaitable[int]]] = {
    "list": _list,
    "show": _show,
    "approve": _approve,
    "reject": _reject,
    "bans": _bans,
    "ban": _ban,
    "unban": _unban,
    "clear-strikes": _clear_strikes,
    "audit": _audit,
}


def _item_line(item: ReviewItem) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(item.created_at))
    why = item.verdict.user_reason or "flagged"
    return f"{item.id}  {item.state.value:8}  {when}Z  {item.requester.key}  [{why}]  {item.request.prompt!r}"


def _item_dict(item: ReviewItem) -> dict[str, Any]:
    return {
        "id": item.id,
        "state": item.state.value,
        "created_at": item.created_at,
        "expires_at": item.expires_at,
        "decided_by": item.decided_by,
        "decided_at": item.decided_at,
        "decision_reason": item.decision_reason,
        "request": request_to_dict(item.request),
        "verdict": item.verdict.to_dict(),
    }


def _duration(text: str) -> float:
    match = DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 3600, 30m, 2h or 1d, got {text!r}")
    return float(match.group(1)) * UNIT_S[match.group(2)]


def _user_key(text: str) -> str:
    platform, _, user_id = text.partition(":")
    if not platform or not user_id or any(ch.isspace() for ch in text):
        raise argparse.ArgumentTypeError(f"expected a user like discord:1234 or slack:U0123, got {text!r}")
    return text
