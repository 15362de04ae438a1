"""Checks on what a site sends back, before anything of it is stored or averaged.

A reply may be hostile or broken. Each defect is refused by name, so the run
store says why a site's answer was not used and the round goes on with the
others; nothing a refused reply carried reaches the store.
"""

from __future__ import annotations

import math

from flwr.app import Message, MetricRecord

from medsynth_fl.wire import Record

MAX_METRICS = 4096  # a site's audit sends ~200; more is a flood, not a report


class ReplyRefused(ValueError):
    """A site's reply was not used; ``reason`` is a short cause code."""

    reason = "refused-reply"

    def __init__(self, detail: str):
        super().__init__(f"reply refused ({self.reason}): {detail}")
        self.detail = detail


class MalformedReply(ReplyRefused):
    """Missing records or keys, or values of the wrong type."""

    reason = "malformed-reply"


class NonFiniteMetric(ReplyRefused):
    """A metric that is NaN or infinite."""

    reason = "non-finite-metric"


class OversizedReply(ReplyRefused):
    """More metrics than any honest reply holds."""

    reason = "oversized-reply"


def reply_metrics(msg: Message) -> dict[str, float]:
    """The reply's metrics as plain finite floats; refuse anything else by name."""
    if Record.METRICS not in msg.content:
        raise MalformedReply("no metrics record")
    record = msg.content[Record.METRICS]
    if not isinstance(record, MetricRecord):
        raise MalformedReply(
            f"metrics is a {type(record).__name__}, not a MetricRecord"
        )
    if len(record) > MAX_METRICS:
        raise OversizedReply(f"{len(record)} metrics, at most {MAX_METRICS}")
    out = {}
    for key, value in record.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise MalformedReply(f"metric {key[:80]!r} is not one number")
        if not math.isfinite(value):
            raise NonFiniteMetric(f"metric {key[:80]!r} is {value}")
        out[str(key)] = float(value)
    return out
