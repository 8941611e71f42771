"""Retries of S3 requests bounded by a total time budget, with a log line per retry.

botocore's own retries are switched off (one attempt per botocore call); `RetryBudget` answers
botocore's `needs-retry` event instead, with botocore's standard retry conditions and backoff, and
two more rules: at most `max_attempts` attempts, and a retry only when the backoff plus another
attempt as long as the last one still fits in `budget_s` seconds since the request began
(`before-call`). Every retry logs one WARNING line naming the endpoint; a request out of budget
raises `BudgetSpentError` (the store turns it into one line). The connect and read timeouts of
every attempt are capped at a third of the budget, so even an endpoint that accepts connections
and never answers is given up within the budget (an attempt slower than the one before it can
overrun by at most its own timeouts).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from botocore.exceptions import BotoCoreError
from botocore.retries.standard import ExponentialBackoff, RetryContext, RetryEventAdapter, StandardRetryConditions

log = logging.getLogger(__name__)

DEFAULT_TIME_BUDGET_S = 120.0
_STARTED = "seppo_request_started"
_ATTEMPT = "seppo_attempt_started"


class BudgetSpentError(BotoCoreError):
    """The request's time budget ran out while it was failing; no further attempt was made."""

    fmt = "{operation} failed {attempts} time(s) in {elapsed:.1f}s (last: {last}) and the {budget:g}s budget is spent"


def attempt_timeouts(budget_s: float, connect_timeout: float, read_timeout: float) -> tuple[float, float]:
    """(connect, read) timeouts of one attempt: the configured ones, at most a third of the budget each."""
    cap = max(budget_s / 3, 0.1)
    return min(connect_timeout, cap), min(read_timeout, cap)


def _last_error(ctx: RetryContext) -> str:
    if ctx.caught_exception is not None:
        return type(ctx.caught_exception).__name__
    code = (ctx.parsed_response or {}).get("Error", {}).get("Code", "")
    status = ctx.http_response.status_code if ctx.http_response is not None else "?"
    return f"HTTP {status} {code}".rstrip()


class RetryBudget:
    """The retry policy of one S3 client: attempts and total seconds per request."""

    def __init__(self, budget_s: float, max_attempts: int, endpoint: str) -> None:
        self.budget_s, self.max_attempts, self.endpoint = budget_s, max_attempts, endpoint
        self._conditions = StandardRetryConditions(max_attempts=max_attempts)
        self._backoff = ExponentialBackoff()
        self._adapter = RetryEventAdapter()

    def register(self, client: Any) -> None:
        client.meta.events.register("before-call.s3", self._stamp)
        client.meta.events.register("needs-retry.s3", self.needs_retry)

    def _stamp(self, context: dict[str, Any], **_: Any) -> None:
        now = time.monotonic()
        context.setdefault(_STARTED, now)
        context.setdefault(_ATTEMPT, now)

    def needs_retry(self, **kwargs: Any) -> float | None:
        """Seconds to sleep before the next attempt, None for no retry; BudgetSpentError when out of time."""
        ctx = self._adapter.create_retry_context(**kwargs)
        if not self._conditions.is_retryable(ctx):
            return None
        now, times = time.monotonic(), ctx.request_context
        elapsed, last = now - times.get(_STARTED, now), now - times.get(_ATTEMPT, now)
        delay = min(float(self._backoff.delay_amount(ctx)), max(self.budget_s - elapsed, 0.0))
        operation = ctx.operation_model.name if ctx.operation_model is not None else "request"
        if elapsed + delay + last >= self.budget_s:
            raise BudgetSpentError(operation=operation, attempts=ctx.attempt_number, elapsed=elapsed,
                                   last=_last_error(ctx), budget=self.budget_s)  # fmt: skip
        log.warning(
            "S3 %s at %s failed (%s), attempt %d of %d; retrying in %.1fs (%.1fs of the %gs budget left)",
            operation, self.endpoint, _last_error(ctx), ctx.attempt_number, self.max_attempts, delay,
            self.budget_s - elapsed, self.budget_s,
        )  # fmt: skip
        times[_ATTEMPT] = now + delay
        return delay
