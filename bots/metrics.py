"""The chat side's Prometheus metrics (see engine/metrics.py for the conventions): deliveries and the intake."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

DELIVERY_RETRIES = Counter(
    "imagine_delivery_retries_total", "Image posts retried after a platform error.", ["platform"]
)
DELIVERY_FAILURES = Counter(
    "imagine_delivery_failures_total",
    "Image posts given up for now (every retry failed; a sweep tries later).",
    ["platform"],
)
DELIVERIES_GIVEN_UP = Counter(
    "imagine_deliveries_given_up_total",
    "Results given up after posts failed for service.delivery_give_up_s (the requester is told another way).",
    ["platform"],
)
REDELIVERIES = Counter(
    "imagine_redeliveries_total", "Results posted by a sweep (after failed tries or a restart).", ["platform"]
)
INTAKE_BACKLOG = Gauge(
    "imagine_intake_backlog",
    "Commands stored by this process and not yet handled (e.g. during start-up).",
    ["platform"],
)
