"""The engine's exceptions. Adapters turn them into friendly messages (see bots/messages.py)."""

from __future__ import annotations


class EngineError(Exception):
    """Base class of everything the engine raises on purpose. `kind` is a stable machine-readable name."""

    kind = "engine_error"


class InvalidRequest(EngineError, ValueError):
    """A request parameter is out of range; the message names the parameter and the bad value."""

    kind = "invalid_request"


class QueueFull(EngineError):
    kind = "queue_full"


class EngineClosed(EngineError):
    """The engine is shutting down or stopped and takes no new work."""

    kind = "engine_closed"


class QueueUnavailable(EngineClosed):
    """Scale-out mode: the shared job queue (Redis) cannot be reached; nothing was queued, try again shortly."""

    kind = "queue_unavailable"


class JobCancelled(EngineError):
    kind = "cancelled"


class GenerationTimeout(EngineError):
    kind = "timeout"


class OutOfMemory(EngineError):
    kind = "out_of_memory"


class GenerationFailed(EngineError):
    """The pipeline raised something unexpected; only the jobs in that call fail."""

    kind = "generation_failed"


class NotAllowed(EngineError):
    """A user tried to act on a job that is not theirs (e.g. cancel someone else's job)."""

    kind = "not_allowed"
