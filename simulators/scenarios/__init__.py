"""Scenarios: ``run_scenario(name, ...)`` provisions a world through the API and plays it over MQTT.

Each scenario module documents what the platform should show afterwards; the same facts are in
``ScenarioReport.expected`` so tests and the demo can check them.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from simulators.clock import SimClock
from simulators.provision import ApiClient
from simulators.runner import run_devices
from simulators.scenarios import (
    after_sales,
    bad_devices,
    coldchain_excursion,
    late_delivery,
    load,
    normal_day,
    offline_tracker,
)
from simulators.scenarios.base import ScenarioContext, ScenarioOptions, ScenarioPlan

Builder = Callable[[ScenarioContext], ScenarioPlan]

SCENARIOS: dict[str, tuple[Builder, str | None]] = {
    normal_day.NAME: (normal_day.build, normal_day.__doc__),
    coldchain_excursion.NAME: (coldchain_excursion.build, coldchain_excursion.__doc__),
    late_delivery.NAME: (late_delivery.build, late_delivery.__doc__),
    offline_tracker.NAME: (offline_tracker.build, offline_tracker.__doc__),
    bad_devices.NAME: (bad_devices.build, bad_devices.__doc__),
    load.NAME: (load.build, load.__doc__),
    after_sales.NAME: (after_sales.build, after_sales.__doc__),
}


@dataclass
class ScenarioReport:
    name: str
    run_id: str
    seed: int
    sim_start: datetime
    sim_end: datetime
    speedup: float
    devices: int
    planned: int | None  # messages the plan holds (None: generated on the fly)
    published: dict[str, int]  # acknowledged by the broker, per label
    failed: int
    wall_s: float  # publishing time, connections excluded
    provision_s: float
    expected: dict[str, Any]
    shows: list[str]
    device_ids: list[str] = field(default_factory=list)

    @property
    def acked(self) -> int:
        return sum(self.published.values())

    @property
    def rate(self) -> float:
        return self.acked / self.wall_s if self.wall_s > 0 else 0.0

    def lines(self) -> list[str]:
        head = [f"scenario {self.name} (run {self.run_id}, seed {self.seed}): simulated "
                f"{self.sim_start:%Y-%m-%d %H:%M} to {self.sim_end:%H:%M} UTC at x{self.speedup:g}",
                f"{self.devices} devices, {self.acked} messages acknowledged ({self.rate:.0f} msg/s), "
                f"{self.failed} failed; provisioning {self.provision_s:.1f} s, publishing {self.wall_s:.1f} s",
                "the platform should show:"]
        return head + [f"  - {s}" for s in self.shows]


def run_tag(now: datetime) -> str:
    """A short run tag from the start time: distinct per second, letters and digits only."""
    n = int(now.timestamp())
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out


def plan_scenario(name: str, options: ScenarioOptions, now: datetime | None = None) -> tuple[ScenarioContext,
                                                                                            ScenarioPlan]:
    """The pure part: the clock, the run tag and the scenario's plan (no I/O)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; one of {', '.join(SCENARIOS)}")
    now = (now or datetime.now(UTC)).astimezone(UTC)
    clock = SimClock.ending_now(options.duration_s, options.speedup, now)
    tag = (options.run_id or run_tag(now)).lower()
    if not tag.isalnum() or len(tag) > 10:
        raise ValueError(f"run id {tag!r} must be 1 to 10 letters and digits")
    ctx = ScenarioContext(name, options, clock, tag)
    return ctx, SCENARIOS[name][0](ctx)


async def arun_scenario(name: str, *, api_url: str, admin_token: str, broker_host: str, broker_port: int,
                        topic_prefix: str = "cargotrace/v1", seed: int = 1, speedup: float = 60.0,
                        duration_s: float = 300.0, devices: int | None = None, rate: float | None = None,
                        offline: bool = True, run_id: str | None = None, progress: bool = True,
                        tls: ssl.SSLContext | None = None) -> ScenarioReport:
    options = ScenarioOptions(seed=seed, speedup=speedup, duration_s=duration_s, devices=devices, rate=rate,
                              offline=offline, run_id=run_id)
    ctx, plan = plan_scenario(name, options)
    console = Console(stderr=True)
    t0 = time.monotonic()
    # Blocking HTTP in a thread: the caller's event loop stays responsive.
    passwords = await asyncio.to_thread(_provision, api_url, admin_token, plan)
    provision_s = time.monotonic() - t0
    if progress:
        console.print(f"[bold]{name}[/bold]: provisioned {len(plan.master)} master records and "
                      f"{len(plan.devices)} devices in {provision_s:.1f} s; simulating "
                      f"{ctx.clock.sim_start:%Y-%m-%d %H:%M}-{ctx.clock.sim_end:%H:%M} UTC at x{speedup:g}")
    stats = await run_devices(broker_host, broker_port, topic_prefix, passwords, plan.streams, ctx.clock,
                              progress=progress, title=f"cargotrace simulate {name}", tls=tls)
    report = ScenarioReport(name, ctx.tag, seed, ctx.clock.sim_start, ctx.clock.sim_end, speedup, len(plan.devices),
                            plan.message_count, dict(stats.published), stats.failed, stats.elapsed_s, provision_s,
                            plan.expected, plan.shows, [d.device_id for d in plan.devices])
    if progress:
        for line in report.lines():
            console.print(line)
    return report


def run_scenario(name: str, *, api_url: str, admin_token: str, broker_host: str, broker_port: int,
                 topic_prefix: str = "cargotrace/v1", seed: int = 1, speedup: float = 60.0,
                 duration_s: float = 300.0, devices: int | None = None, rate: float | None = None,
                 offline: bool = True, run_id: str | None = None, progress: bool = True,
                 tls: ssl.SSLContext | None = None) -> ScenarioReport:
    """Provision the scenario's world through the API and play it over MQTT; blocks until done."""
    return asyncio.run(arun_scenario(name, api_url=api_url, admin_token=admin_token, broker_host=broker_host,
                                     broker_port=broker_port, topic_prefix=topic_prefix, seed=seed, speedup=speedup,
                                     duration_s=duration_s, devices=devices, rate=rate, offline=offline,
                                     run_id=run_id, progress=progress, tls=tls))


def _provision(api_url: str, admin_token: str, plan: ScenarioPlan) -> dict[str, str]:
    with ApiClient(api_url, admin_token) as api:
        api.put_all(plan.master)
        return api.device_passwords(plan.devices)


__all__ = ["SCENARIOS", "ScenarioOptions", "ScenarioReport", "arun_scenario", "plan_scenario", "run_scenario"]
