"""What a simulated device emits: a payload on a kind's topic at a simulated moment.

``at`` is when the device *publishes* (simulated time); the payload's own ``ts`` is when the
thing happened. They differ for a device that buffered while offline. ``payload`` is the exact
bytes on the wire, so a model can also produce deliberately broken payloads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Message:
    at: datetime
    device_id: str
    kind: str
    payload: bytes
    label: str = ""  # what it stands for ("scan:receive", "position", "bad:invalid_json"), for progress

    def value(self) -> Any:
        """The decoded JSON payload (raises for deliberately malformed ones)."""
        return orjson.loads(self.payload)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def rfc3339(ts: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, as most device firmwares send it."""
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(ts: datetime) -> int:
    return round(ts.timestamp() * 1000)


@dataclass(slots=True)
class MsgIds:
    """``msg_id`` per device: unique per run (the run tag), per model of the device (``stream``:
    a scanner's scans and its heartbeats come from two models) and per message (a sequence)."""

    tag: str
    stream: str = "m"
    seq: int = field(default=0)

    def next(self) -> str:
        self.seq += 1
        return f"{self.tag}-{self.stream}{self.seq:07d}"


def by_time(messages: list[Message]) -> list[Message]:
    """Stable sort by publish time: messages of one moment keep the order they were made in."""
    return sorted(messages, key=lambda m: m.at)

