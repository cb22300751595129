"""core.replay without services: the oracle itself must be right before it judges the platform.

The master data is built from the stream's own API bodies (what provisioning PUTs); the records
are the stream's messages decoded as ingest decodes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from core.coldchain import Profile
from core.geo import Circle
from core.ledger import Location
from core.replay import DeviceInfo, History, MasterData, ReplayState, ShipmentMaster, first_difference, replay
from ingest.rfid_sweep import gate_config
from simulators.streams import Stream, chaos, decode_messages, generate

NOW = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)
PREFIX = "cargotrace/v1"


def master_of(stream: Stream) -> MasterData:
    bodies: dict[str, dict[str, Mapping[str, Any]]] = {}
    for path, body in stream.master:
        _, kind, code = path.split("/")
        bodies.setdefault(kind, {})[code] = body
    sites = bodies["sites"]
    locations = {code: Location(code, b["site"], b["type"]) for code, b in bodies["locations"].items()}
    items = bodies["items"]
    shipments = {ref: ShipmentMaster(ref, b["origin"], b["destination"], b["customer"], b["vehicle"],
                                     sites[locations[b["origin"]].site].get("geofence"),
                                     datetime.fromisoformat(b["promised_at"]) if b.get("promised_at") else None,
                                     None, b.get("profile"),
                                     tuple(items[line["sku"]].get("profile") for line in b["lines"]))
                 for ref, b in bodies["shipments"].items()}
    devices = {d.device_id: DeviceInfo(d.device_id, d.body["kind"], d.body.get("site"), d.body.get("location"),
                                       d.body.get("mode"), d.body.get("vehicle"), d.body.get("profile"),
                                       gate_config(d.body["gate"]) if d.body.get("gate") else None)
               for d in stream.devices}
    return MasterData(
        locations=locations,
        items_by_gtin={b["gtin"]: sku for sku, b in items.items()},
        devices=devices, shipments=shipments,
        geofences={code: Circle(b["lat"], b["lon"], b["radius_m"]) for code, b in bodies["geofences"].items()},
        profiles={code: Profile(b["temp_min_c"], b["temp_max_c"], delay_s=b["delay_s"], hysteresis_c=b["hysteresis_c"])
                  for code, b in bodies["profiles"].items()})


def replay_of(stream: Stream, messages: Any = None) -> ReplayState:
    records = decode_messages(stream.messages if messages is None else messages, PREFIX,
                              stream.sim_end + timedelta(minutes=1))
    return replay(History(master_of(stream), tuple(records), stream.sim_end))


@pytest.fixture(scope="module")
def day() -> Stream:
    return generate(2, now=NOW, tag="unit2")


def test_replay_books_what_the_scenario_expects(day: Stream) -> None:
    state = replay_of(day)
    watched = {k[1] for k in day.expected_balances}
    got = {k: float(v) for k, v in state.balances.items() if k[1] in watched}
    assert got == {k: v for k, v in day.expected_balances.items() if v}
    # 12 cases in and 2 out through the gate; the parked pallet is an observation only.
    moved = [p for p in state.passages if p.moved]
    assert sorted({p.direction for p in moved}) == ["inbound", "outbound"] and len(moved) == 14
    assert [p.reason for p in state.passages if not p.moved] == ["one_zone_only"]
    for ref, shipment in state.shipments.items():
        assert shipment.status == "delivered", ref
        assert [e.type for e in sorted(shipment.events, key=lambda e: e.ts)] == \
            ["loading", "departed", "arrived", "delivered"]
    # The ledger nets to zero per sku and lot: double entry.
    net: dict[tuple[str, str], Decimal] = {}
    for (sku, _, lot), qty in state.balances.items():
        net[(sku, lot)] = net.get((sku, lot), Decimal(0)) + qty
    assert all(v == 0 for v in net.values())


def test_probe_b_excursion_is_its_own_alarm(day: Stream) -> None:
    """Probe A's in-range readings at the same instants do not mask probe B's excursion."""
    alarms = [a for a in replay_of(day).alarms if a.subject.endswith("-cold2/B")]
    assert [(a.type, a.state) for a in alarms] == [("temperature_high", "cleared")]
    assert not [a for a in replay_of(day).alarms if a.subject.endswith("-cold2/A")]


def test_reefer_failure_on_the_road_opens_one_ticket(day: Stream) -> None:
    """The first truck's reefer warms past 8 °C while driving: one alarm for its shipment, and the
    after-sales ticket points at it."""
    state = replay_of(day)
    (alarm,) = [a for a in state.alarms if a.subject.endswith("-rf1/reefer-air")]
    assert (alarm.type, alarm.shipment, alarm.state) == ("temperature_high", "SIM-UNIT2-S1", "cleared")
    assert [(t.cause, t.shipment, t.alarm) for t in state.tickets] == \
        [("temperature_excursion", "SIM-UNIT2-S1", (alarm.type, alarm.subject, alarm.started_at))]


@pytest.mark.parametrize("seed", [2, 3])
def test_replay_ignores_order_duplicates_and_grouping(seed: int) -> None:
    stream = generate(seed, now=NOW, tag=f"unit{seed}")
    delivered = chaos(stream.messages, seed)
    assert len(delivered) != len(stream.messages)  # the chaos did regroup and duplicate
    assert first_difference(replay_of(stream, delivered), replay_of(stream)) is None


def test_first_difference_names_the_field_and_the_line(day: Stream) -> None:
    state = replay_of(day)
    assert first_difference(state, state) is None
    extra = dataclasses.replace(state, balances={**state.balances, ("SKU-X", "BIN", ""): Decimal(3)})
    assert first_difference(extra, state) == "balances[('SKU-X', 'BIN', '')]: stored Decimal('3'), replay None"
    fewer = dataclasses.replace(state, passages=state.passages[1:])
    message = first_difference(fewer, state)
    assert message is not None and message.startswith("passages: 14 stored, 15 in the replay; first only in replay: ")
