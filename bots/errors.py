"""The chat side's exceptions: one root, `BotError`. None of their texts reach a user as they are: the adapters
answer with bots/messages.py's strings."""

from __future__ import annotations


class BotError(Exception):
    """Base class of everything bots/ raises on purpose."""


class UsageError(BotError):
    """Bad input on the command line: printed as one line, exit code 2."""


class AdapterStartError(BotError):
    """A platform refused the credentials or could not be reached at start: one clear line; `imagine serve` exits
    2."""


class PlaceUnreachable(BotError):
    """Raised by a replier when the platform says the bot cannot post where the request came from at all (not a
    member of the channel), as opposed to a transient failure. The conversation then drops the job at once."""


class Deferred(BotError):
    """Raised by an intake handler that cannot take the request now (the service is stopping): it stays stored
    and is handed over again at the next `open()`."""


class BadButton(BotError, ValueError):
    """A custom id that is not one of ours, or is malformed."""


class BadOptions(BotError, ValueError):
    """An option in a Slack prompt that cannot be read (the message names it and the value)."""
