"""``status`` heartbeats: battery draining with use, radio signal, firmware, uptime.

Battery: a linear drain per hour plus extra per message sent (radio time is what empties a
tracker), with a little voltage sag noise; never below zero. Signal strength wanders around a
site-dependent level.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from simulators.messages import Message, MsgIds, dumps, rfc3339


@dataclass
class HeartbeatModel:
    device_id: str
    rng: random.Random
    tag: str
    battery_pct: float = 95.0
    drain_pct_per_h: float = 1.0
    every_s: float = 900.0
    rssi_dbm: float = -70.0
    fw: str = "2.4.1"
    uptime_s: int = 86_400
    ids: MsgIds = field(init=False)

    def __post_init__(self) -> None:
        self.ids = MsgIds(self.tag, "h")

    def messages(self, start: datetime, end: datetime) -> list[Message]:
        out: list[Message] = []
        t = start + timedelta(seconds=self.rng.uniform(0, min(self.every_s, 120.0)))
        while t < end:
            hours = (t - start).total_seconds() / 3600.0
            level = self.battery_pct - self.drain_pct_per_h * hours + self.rng.gauss(0, 0.2)
            body = {"msg_id": self.ids.next(), "ts": rfc3339(t),
                    "battery_pct": round(min(100.0, max(0.0, level)), 1),
                    "rssi_dbm": round(self.rssi_dbm + self.rng.gauss(0, 3), 0), "fw": self.fw,
                    "uptime_s": self.uptime_s + int((t - start).total_seconds())}
            out.append(Message(t, self.device_id, "status", dumps(body), "status"))
            t += timedelta(seconds=self.every_s)
        return out
