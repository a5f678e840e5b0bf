"""Which Slack Web API calls slack_sdk repeats by itself after a server error (5xx) or a dropped connection.

Only those that can be repeated without a second effect: edits (the status message, a review post's outcome),
deletes and reads. A post (chat.postMessage, files.completeUploadExternal) is not repeated here: Slack may have
made it before the answer was lost, and a second one would show twice. Posts go through bots/slack/posting.py,
which retries them itself and looks for the earlier try before each retry. Rate limits (429) have their own
handler (bots/slack/adapter.py): a call refused with 429 did not happen.
"""

from __future__ import annotations

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

REPEATABLE_METHODS = frozenset(
    {
        "chat.update",
        "chat.delete",
        "auth.test",
        "conversations.history",
        "conversations.replies",
        "conversations.info",
        "users.info",
        "usergroups.users.list",
    }
)
POSTING_METHODS = frozenset({"chat.postMessage", "files.completeUploadExternal"})
"""Retried by bots/slack/posting.py, which looks before it posts again."""
SERVER_ERROR_RETRIES = 3
BACKOFF_FACTOR_S = 0.5
"""Waits of 0.5 s, 1 s, 2 s (with jitter) between the tries."""


def api_method(request: HttpRequest) -> str:
    """`chat.update` for https://slack.com/api/chat.update?..."""
    return request.url.split("?", 1)[0].rsplit("/", 1)[-1]


class RepeatableServerErrorRetryHandler(AsyncRetryHandler):
    def __init__(self, max_retry_count: int = SERVER_ERROR_RETRIES) -> None:
        super().__init__(max_retry_count, BackoffRetryIntervalCalculator(backoff_factor=BACKOFF_FACTOR_S))

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code >= 500 and api_method(request) in REPEATABLE_METHODS


class ConnectionErrorRetryHandler(AsyncConnectionErrorRetryHandler):
    """slack_sdk's retry after a dropped or reset connection, except for posts: the request may have reached
    Slack before the connection went."""

    async def _can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if api_method(request) in POSTING_METHODS:
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)
