"""Admission's Prometheus metrics (see engine/metrics.py for the conventions): verdicts by action and user-safe
category, and refusals by the limit that refused. Categories are the verdicts' user reasons, a small fixed set."""

from __future__ import annotations

from prometheus_client import Counter

MODERATION = Counter(
    "imagine_moderation_total", "Prompt verdicts by action (allow, review, block) and category.", ["action", "category"]
)
RATE_LIMITED = Counter("imagine_rate_limited_total", "Prompts refused by a rate limit, by limit.", ["limit"])
BANNED = Counter("imagine_banned_prompts_total", "Prompts refused because their requester is banned.")
