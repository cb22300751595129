"""The after-sales scenario's plan (pure, no services): the return scan carries the RMA ref the
service steps will create, after the delivery, and no msg_id repeats within a device."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from simulators.scenarios import SCENARIOS, plan_scenario
from simulators.scenarios.after_sales import NAME, RETURN_AFTER
from simulators.scenarios.base import ScenarioOptions


def test_after_sales_plan_returns_the_goods_with_the_rma_ref() -> None:
    assert NAME in SCENARIOS
    _, plan = plan_scenario(NAME, ScenarioOptions(seed=3, speedup=150, duration_s=60, run_id="t1"),
                            now=datetime(2026, 12, 4, 12, tzinfo=UTC))
    assert plan.expected["rma"] == "RMA-T1"
    scans = [(m, orjson.loads(m.payload)) for ms in plan.streams.values() for m in ms if m.kind == "scan"]
    returns = [(m, b) for m, b in scans if b["mode"] == "return"]
    assert len(returns) == 1 and returns[0][1]["ref"] == "RMA-T1" and returns[0][1]["qty"] == 2
    delivered = [m.at for m, b in scans if b["mode"] == "deliver"]
    # (``at`` is when the scanner sent it: the scan time plus up to a second of upload delay)
    assert delivered and returns[0][0].at - max(delivered) >= RETURN_AFTER - timedelta(seconds=1)
    for stream in plan.streams.values():
        ids = [orjson.loads(m.payload)["msg_id"] for m in stream]
        assert len(ids) == len(set(ids))
    puts = dict(plan.master)
    assert puts["/locations/SIM-DC1-USED"]["type"] == "consumed"
