"""What a scenario is: master data, devices, message streams, and what the platform should show."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from simulators.clock import SimClock
from simulators.messages import Message
from simulators.provision import DeviceDef


@dataclass(frozen=True, slots=True)
class ScenarioOptions:
    seed: int = 1
    speedup: float = 60.0
    duration_s: float = 300.0
    devices: int | None = None  # load: device count; normal-day: trucks
    rate: float | None = None  # load: total msg/s
    offline: bool = True  # offline-tracker: False runs the same day with the tracker online (the baseline)
    run_id: str | None = None  # tags per-run codes (shipments, vehicles, lots, per-run devices, msg_ids)


@dataclass(frozen=True, slots=True)
class ScenarioContext:
    name: str
    options: ScenarioOptions
    clock: SimClock
    tag: str  # the run tag: lower-case letters and digits

    def rng(self, component: str) -> random.Random:
        """An independent, seeded generator per component: adding a device to a scenario does not
        change the messages of the others."""
        return random.Random(f"{self.options.seed}:{self.name}:{component}")

    def at(self, minutes: float) -> datetime:
        return self.clock.at(minutes * 60.0)

    @property
    def up(self) -> str:
        return self.tag.upper()


@dataclass
class ScenarioPlan:
    master: list[tuple[str, Mapping[str, Any]]]  # PUTs in dependency order
    devices: list[DeviceDef]
    streams: Mapping[str, Iterable[Message]]  # per device, in publish order
    expected: dict[str, Any] = field(default_factory=dict)
    shows: list[str] = field(default_factory=list)  # what the platform should show afterwards
    message_count: int | None = None  # known in advance, None for generated streams


def streams_of(messages: Iterable[Message]) -> dict[str, list[Message]]:
    out: dict[str, list[Message]] = {}
    for m in sorted(messages, key=lambda m: m.at):
        out.setdefault(m.device_id, []).append(m)
    return out
