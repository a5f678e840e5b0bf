"""Which Slack Web API calls slack_sdk repeats by itself when Slack answers with a server error (5xx).

Only those that can be repeated without a second effect: edits (the status message, a review post's outcome),
deletes and reads. A post (chat.postMessage, files.completeUploadExternal) is not repeated here: Slack may have
made it before it failed, and a second one would show twice; images are retried by the delivery layer
(bots/conversation/delivery.py), which knows what was posted. Rate limits (429) and dropped connections have their
own handlers (bots/slack/adapter.py): a call that met either did not happen.
"""

from __future__ import annotations

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
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
        "conversations.info",
        "users.info",
        "usergroups.users.list",
    }
)
SERVER_ERROR_RETRIES = 3
BACKOFF_FACTOR_S = 0.5
"""Waits of 0.5 s, 1 s, 2 s (with jitter) between the tries."""


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
        method = request.url.split("?", 1)[0].rsplit("/", 1)[-1]
        return response is not None and response.status_code >= 500 and method in REPEATABLE_METHODS
