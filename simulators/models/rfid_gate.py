"""An RFID dock-door gate: two antenna zones and the reads a real reader reports.

Geometry: the tag travels along the door's axis, ``x`` in metres, outer antennas at ``x = 0``
(the door), inner antennas at ``x = 3`` (inside), each ``h`` metres to the side. Inbound goes
from x = -5 to x = 8, outbound the reverse, at forklift speed. Each antenna interrogates
``read_rate_hz`` times a second; a round misses the tag with probability ``miss_rate`` (30-40 %
in practice) and the reader sometimes reports a read twice. RSSI follows free-space loss from
the antenna plus noise, so each zone's strongest read falls where the tag passes closest to it:
outer peak before inner peak is inbound. Tags moving through the neighbouring door are seen
weakly (through the wall, further away): stray reads, always below the platform's RSSI floor.

The reader reports once a second: one ``rfid`` message with every read of that second, each with
its own ``ts``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from simulators.messages import Message, MsgIds, dumps, rfc3339

Direction = Literal["inbound", "outbound"]

RSSI_AT_1M = -50.0  # dBm of a tag passing right in front of an antenna (h = 1 m)
SENSITIVITY = -84.0  # weaker replies are not decoded at all
STRAY_CEILING = -77.0  # stray reads from the other door stay below the -75 dBm floor


@dataclass(frozen=True, slots=True)
class RawRead:
    ts: datetime
    epc: str
    antenna: int
    rssi: float


@dataclass
class GateModel:
    device_id: str
    rng: random.Random
    tag: str
    outer_antennas: tuple[int, ...] = (1, 2)
    inner_antennas: tuple[int, ...] = (3, 4)
    read_rate_hz: float = 8.0
    miss_rate: float = 0.35
    repeat_rate: float = 0.05
    speed_mps: float = 1.4
    zone_gap_m: float = 3.0
    side_m: float = 1.0
    noise_db: float = 1.5
    report_every_s: float = 1.0
    reads: list[RawRead] = field(default_factory=list)
    ids: MsgIds = field(init=False)

    def __post_init__(self) -> None:
        self.ids = MsgIds(self.tag, "r")

    def _antenna_x(self, antenna: int) -> float:
        return 0.0 if antenna in self.outer_antennas else self.zone_gap_m

    def _rssi(self, dx: float, side: float, extra_loss: float = 0.0) -> float:
        d = math.hypot(dx, side)
        return RSSI_AT_1M - 20 * math.log10(max(d, 0.3)) - extra_loss + self.rng.gauss(0, self.noise_db)

    def _interrogate(self, start: datetime, epc: str, x_of: Sequence[float], dt: float, side: float,
                     extra_loss: float, ceiling: float | None) -> None:
        """Every antenna's rounds while the tag moves through positions ``x_of`` (one per ``dt``)."""
        antennas = (*self.outer_antennas, *self.inner_antennas)
        for i, x in enumerate(x_of):
            for k, antenna in enumerate(antennas):
                if self.rng.random() < self.miss_rate:
                    continue
                # Antennas are multiplexed: each gets its slot within the round.
                ts = start + timedelta(seconds=i * dt + k * dt / len(antennas) + self.rng.uniform(0, 0.01))
                rssi = self._rssi(x - self._antenna_x(antenna), side, extra_loss)
                if ceiling is not None:
                    rssi = min(rssi, ceiling - self.rng.uniform(0, 3))
                if rssi < SENSITIVITY:
                    continue
                read = RawRead(ts, epc, antenna, round(rssi, 1))
                self.reads.append(read)
                if self.rng.random() < self.repeat_rate:
                    self.reads.append(read)  # the reader reports the same read twice

    def passage(self, start: datetime, epcs: Sequence[str], direction: Direction) -> datetime:
        """A pallet carrying ``epcs`` through the door; returns when it has left the read field."""
        dt = 1.0 / self.read_rate_hz
        length = 5.0 + self.zone_gap_m + 5.0
        steps = int(length / self.speed_mps / dt)
        for epc in epcs:
            offset = self.rng.uniform(-0.4, 0.4)  # where on the pallet the tag sits
            side = self.side_m + self.rng.uniform(-0.3, 0.5)
            xs = [-5.0 + offset + i * dt * self.speed_mps for i in range(steps)]
            if direction == "outbound":
                xs = [self.zone_gap_m - x for x in xs]  # mirror: from inside to outside
            self._interrogate(start, epc, xs, dt, side, 0.0, None)
        return start + timedelta(seconds=steps * dt)

    def neighbour_traffic(self, start: datetime, epcs: Sequence[str]) -> None:
        """Tags going through the next door, 4-6 m away behind a wall: weak stray reads only."""
        dt = 1.0 / self.read_rate_hz
        steps = int(13.0 / self.speed_mps / dt)
        for epc in epcs:
            xs = [-5.0 + i * dt * self.speed_mps for i in range(steps)]
            self._interrogate(start, epc, xs, dt, self.rng.uniform(4.0, 6.0), 12.0, STRAY_CEILING)

    def lingering(self, start: datetime, epc: str, seconds: float, zone: Literal["outer", "inner"]) -> None:
        """A pallet parked near one zone for a while: read on one side only, so it moves nothing."""
        dt = 1.0 / self.read_rate_hz
        x = 0.3 if zone == "outer" else self.zone_gap_m - 0.3
        # The other zone's antennas face away from the parked pallet: they do not see it.
        antennas = self.outer_antennas if zone == "outer" else self.inner_antennas
        for i in range(int(seconds / dt)):
            for k, antenna in enumerate(antennas):
                if self.rng.random() < self.miss_rate:
                    continue
                ts = start + timedelta(seconds=i * dt + k * dt / len(antennas))
                rssi = self._rssi(x - self._antenna_x(antenna), self.side_m)
                self.reads.append(RawRead(ts, epc, antenna, round(rssi, 1)))

    def messages(self) -> list[Message]:
        """The reads grouped into the reader's once-a-second reports, in time order."""
        out: list[Message] = []
        reads = sorted(self.reads, key=lambda r: (r.ts, r.antenna, r.epc))
        batch: list[RawRead] = []
        window_end: datetime | None = None
        for read in reads:
            if window_end is not None and read.ts >= window_end:
                out.append(self._report(batch, window_end))
                batch = []
            if not batch:
                window_end = read.ts + timedelta(seconds=self.report_every_s)
            batch.append(read)
        if batch and window_end is not None:
            out.append(self._report(batch, window_end))
        return out

    def _report(self, batch: list[RawRead], window_end: datetime) -> Message:
        sent = max(r.ts for r in batch)
        body = {"msg_id": self.ids.next(), "ts": rfc3339(sent),
                "reads": [{"epc": r.epc, "antenna": r.antenna, "rssi": r.rssi, "ts": rfc3339(r.ts)} for r in batch]}
        return Message(min(window_end, sent + timedelta(seconds=self.report_every_s)), self.device_id, "rfid",
                       dumps(body), "rfid")
