"""A handheld scanner: one ``scan`` message per trigger pull, as a warehouse worker uses it.

The scanner sends the raw code exactly as read (symbology identifier, GS separators) with the
mode the worker picked on the screen, the location it is at and the business reference typed or
scanned for the task. Timestamps alternate between RFC 3339 and epoch milliseconds per device,
because fleets mix firmwares.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from simulators.messages import Message, MsgIds, dumps, epoch_ms, rfc3339


@dataclass
class ScannerModel:
    device_id: str
    rng: random.Random
    tag: str
    epoch_ts: bool = False  # firmware sends epoch milliseconds instead of RFC 3339
    upload_delay_s: float = 1.0  # Wi-Fi round trip and the app's send queue, at most
    separator: str = "\x1d"  # some scanners are configured to send '|' instead of GS
    ids: MsgIds = field(init=False)

    def __post_init__(self) -> None:
        self.ids = MsgIds(self.tag, "s")

    def scan(self, at: datetime, mode: str, code: str, *, qty: float | None = None, location: str | None = None,
             to_location: str | None = None, ref: str | None = None) -> Message:
        body: dict[str, Any] = {"msg_id": self.ids.next(), "ts": epoch_ms(at) if self.epoch_ts else rfc3339(at),
                                "code": code, "mode": mode}
        for name, value in (("qty", qty), ("location", location), ("to_location", to_location), ("ref", ref)):
            if value is not None:
                body[name] = value
        sent = at + timedelta(seconds=self.rng.uniform(0.05, self.upload_delay_s))
        return Message(sent, self.device_id, "scan", dumps(body), f"scan:{mode}")
