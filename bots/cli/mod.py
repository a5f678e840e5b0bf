"""`imagine mod ...`: local moderator accounts for the dashboard at /mod (deployments without Discord or Slack).

    imagine mod add NAME          the password is prompted twice on a terminal, else read from stdin's first line
    imagine mod disable NAME      the account can no longer sign in
    imagine mod list

Accounts sign in at /mod/login and act in the audit log as `local:NAME`. Passwords are stored as argon2id hashes.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable

from bots.cli import EXIT_FAILURE, EXIT_OK
from bots.cli.store import with_database
from bots.errors import UsageError
from config.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="mod_command", required=True, parser_class=type(parser))
    add = actions.add_parser("add", help="create a local moderator account, or set its password")
    add.add_argument("name")
    disable = actions.add_parser("disable", help="stop a local account from signing in")
    disable.add_argument("name")
    actions.add_parser("list", help="the enabled local accounts")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, settings_loader: Callable[[], Settings]) -> int:
    from bots.web.mod.local_accounts import AccountError, LocalAccounts, check_name, check_password

    try:
        if args.mod_command == "add":  # read and check before touching the database
            name, password = check_name(args.name), check_password(_read_password())
    except AccountError as exc:
        raise UsageError(str(exc)) from None

    async def add(accounts: LocalAccounts) -> int:
        created = await accounts.add(name, password)
        print(f"{'created' if created else 'password changed for'} local moderator {name!r}")
        return EXIT_OK

    async def disable(accounts: LocalAccounts) -> int:
        if await accounts.disable(args.name):
            print(f"disabled local moderator {args.name!r}")
            return EXIT_OK
        print(f"error: no enabled local moderator named {args.name!r}", file=sys.stderr)
        return EXIT_FAILURE

    async def listing(accounts: LocalAccounts) -> int:
        for account in await accounts.names():
            print(account)
        return EXIT_OK

    work = {"add": add, "disable": disable, "list": listing}[args.mod_command]
    return asyncio.run(_with_accounts(settings_loader(), work))


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise UsageError("the two passwords differ; nothing changed")
        return first
    return sys.stdin.readline().rstrip("\r\n")


async def _with_accounts(settings: Settings, work: Callable[..., Awaitable[int]]) -> int:
    from bots.web.mod.local_accounts import LocalAccounts

    return await with_database(settings, lambda database: work(LocalAccounts(database)))
