from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.epc import encode_sgtin96
from core.rfid import GateConfig, Passage, Read, closed_passages, passage_posting, passage_reason, passages

OUTER = frozenset({1, 2})
INNER = frozenset({3, 4})
GATE = GateConfig(outer_antennas=OUTER, inner_antennas=INNER, outer_location="DOCK-1", inner_location="STAGING-1")
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

# Antennas as (x, y) in metres: x along the path through the door (outer at the door, inner
# 3 m inside), y across it. Antenna 9 belongs to another gate of the same reader.
ANTENNA_XY = {1: (0.0, -1.0), 2: (0.0, 1.0), 3: (3.0, -1.0), 4: (3.0, 1.0)}


def _epc(n: int) -> str:
    return encode_sgtin96("80614141123458", 1000 + n, 7)


# --- synthetic reader ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reader:
    """A toy UHF reader: cycles its antennas, misses reads, repeats some, quantises RSSI."""

    slot_s: float = 0.02  # time per antenna in the inventory cycle
    noise_db: float = 1.0
    sensitivity_dbm: float = -85.0
    repeat_p: float = 0.3  # same read reported again, bit for bit (retry, at-least-once)
    echo_p: float = 0.3  # tag answers again a few ms later in the same slot

    def rssi(self, rng: random.Random, antenna: int, x: float, y: float) -> float:
        ax, ay = ANTENNA_XY[antenna]
        distance = math.hypot(x - ax, y - ay) + 0.2
        return -35.0 - 30.0 * math.log10(distance) + rng.gauss(0.0, self.noise_db)


def _read(epc: str, antenna: int, rssi: float, t: float) -> Read:
    # Readers report whole milliseconds and half-dB steps, which also makes ties happen.
    return Read(epc=epc, antenna=antenna, rssi=round(rssi * 2) / 2, ts=T0 + timedelta(milliseconds=round(t * 1000)))


def simulate_pass(
    rng: random.Random,
    epc: str,
    direction: Literal["inbound", "outbound"],
    start_s: float,
    *,
    speed_mps: float | None = None,
    antennas: frozenset[int] = OUTER | INNER,
    reader: Reader = Reader(),
) -> list[Read]:
    """A tag carried through the door over ~2 s, RSSI following distance to each antenna."""
    speed = speed_mps if speed_mps is not None else rng.uniform(3.0, 3.6)
    x_from, x_to = (-1.5, 4.5) if direction == "inbound" else (4.5, -1.5)
    duration = abs(x_to - x_from) / speed
    y = rng.uniform(-0.6, 0.6)
    miss_p = rng.uniform(0.3, 0.4)
    order = sorted(antennas)
    reads: list[Read] = []
    t = 0.0
    while t <= duration:
        for antenna in order:
            x = x_from + (x_to - x_from) * (t / duration)
            rssi = reader.rssi(rng, antenna, x, y)
            if rssi >= reader.sensitivity_dbm and rng.random() >= miss_p:
                read = _read(epc, antenna, rssi, start_s + t)
                reads.append(read)
                if rng.random() < reader.repeat_p:
                    reads.append(read)
                if rng.random() < reader.echo_p:
                    reads.append(_read(epc, antenna, rssi + rng.choice((-0.5, 0.0, 0.5)), start_s + t + 0.004))
            t += reader.slot_s
    return reads


def simulate_stray(rng: random.Random, epc: str, start_s: float, duration_s: float) -> list[Read]:
    """A tag going through the neighbouring door: heard through the wall, always below the floor."""
    return [
        _read(epc, rng.choice(sorted(OUTER | INNER)), rng.uniform(-88.0, GATE.rssi_floor_dbm - 0.6), start_s + t)
        for t in sorted(rng.uniform(0.0, duration_s) for _ in range(rng.randint(10, 40)))
    ]


def simulate_parked(
    rng: random.Random, epc: str, zone: frozenset[int], start_s: float, duration_s: float
) -> list[Read]:
    """A tag standing near one zone (a pallet parked in staging): seen by that zone only."""
    reads = []
    t = 0.0
    while t < duration_s:
        for antenna in sorted(zone):
            if rng.random() >= 0.35:
                reads.append(_read(epc, antenna, rng.gauss(-58.0, 1.5), start_s + t))
        t += 0.04
    return reads


@dataclass(frozen=True)
class Scenario:
    reads: list[Read]
    moving: list[str]
    direction: Literal["inbound", "outbound"]
    stray: str
    parked: str
    glimpsed: str


def scenario(seed: int) -> Scenario:
    """A pallet of 4-6 tags through the door, a stray tag next door, a parked tag, one glimpse."""
    rng = random.Random(seed)
    direction: Literal["inbound", "outbound"] = rng.choice(("inbound", "outbound"))
    speed = rng.uniform(3.0, 3.6)
    moving = [_epc(i) for i in range(rng.randint(4, 6))]
    reads: list[Read] = []
    for epc in moving:
        reads += simulate_pass(rng, epc, direction, 1.0, speed_mps=speed)
    stray, parked, glimpsed = _epc(100), _epc(101), _epc(102)
    reads += simulate_stray(rng, stray, 0.0, 4.0)
    reads += simulate_parked(rng, parked, INNER, 0.0, 4.0)
    reads.append(_read(glimpsed, 1, -70.0, 2.0))  # one read above the floor: never confirmed
    return Scenario(reads, moving, direction, stray, parked, glimpsed)


# --- direction on noisy passages ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(60))
def test_noisy_pallet_pass(seed: int) -> None:
    sc = scenario(seed)
    result = passages(sc.reads, GATE)
    by_epc: dict[str, list[Passage]] = {}
    for p in result:
        by_epc.setdefault(p.epc, []).append(p)

    expected_from, expected_to = ("DOCK-1", "STAGING-1") if sc.direction == "inbound" else ("STAGING-1", "DOCK-1")
    for epc in sc.moving:
        assert len(by_epc[epc]) == 1, f"one passage per tag per pass, got {by_epc[epc]}"
        p = by_epc[epc][0]
        assert p.direction == sc.direction
        assert (p.from_location, p.to_location) == (expected_from, expected_to)
        assert p.reason is None
        assert p.outer_peak_ts is not None and p.inner_peak_ts is not None
        assert p.ts == max(p.outer_peak_ts, p.inner_peak_ts)
        assert p.first_ts <= p.ts <= p.last_ts

    assert sc.stray not in by_epc  # every read below the floor: not even an observation
    assert [(p.direction, p.from_location, p.to_location, p.reason) for p in by_epc[sc.parked]] == [
        (None, None, None, "one_zone_only")
    ]
    assert by_epc[sc.parked][0].outer_peak_ts is None
    assert [(p.direction, p.reason, p.reads) for p in by_epc[sc.glimpsed]] == [(None, "not_confirmed", 1)]
    assert set(by_epc) == {*sc.moving, sc.parked, sc.glimpsed}
    assert result == sorted(result, key=lambda p: (p.first_ts, p.epc))


def test_tag_seen_by_outer_zone_only_moves_nothing() -> None:
    rng = random.Random(7)
    reads = simulate_pass(rng, _epc(1), "inbound", 0.0, antennas=OUTER)
    [p] = passages(reads, GATE)
    assert (p.direction, p.from_location, p.to_location, p.reason) == (None, None, None, "one_zone_only")
    assert p.inner_peak_ts is None and p.outer_peak_ts is not None
    assert p.ts == p.outer_peak_ts


@pytest.mark.parametrize("seed", range(10))
def test_two_passes_far_apart_are_two_passages(seed: int) -> None:
    rng = random.Random(seed)
    epc = _epc(1)
    first = simulate_pass(rng, epc, "inbound", 0.0)
    gap = GATE.absent_after_s + rng.uniform(0.1, 30.0)
    second_start = (first[-1].ts - T0).total_seconds() + gap
    second = simulate_pass(rng, epc, "outbound", second_start)
    result = passages(second + first, GATE)
    assert [(p.direction, p.from_location, p.to_location) for p in result] == [
        ("inbound", "DOCK-1", "STAGING-1"),
        ("outbound", "STAGING-1", "DOCK-1"),
    ]
    assert result[0].last_ts < result[1].first_ts


# --- properties --------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(seed=st.integers(min_value=0, max_value=10**6), data=st.data())
def test_input_order_and_duplicates_do_not_matter(seed: int, data: st.DataObject) -> None:
    reads = scenario(seed).reads
    expected = passages(reads, GATE)
    shuffled = data.draw(st.permutations(reads), label="permutation")
    extra = data.draw(st.lists(st.sampled_from(reads), max_size=60), label="duplicates")
    assert passages(shuffled, GATE) == expected
    assert passages(shuffled + extra, GATE) == expected
    assert passages(list(dict.fromkeys(reads)), GATE) == expected


_reads = st.builds(
    Read,
    epc=st.sampled_from(["3074257BF7194E4000001A85", "3074257bf7194e4000001a85", "30340000000000000000000A"]),
    antenna=st.integers(min_value=1, max_value=5),
    rssi=st.sampled_from([-90.0, -75.0, -74.5, -60.0, -50.0, -49.5]),
    ts=st.integers(min_value=0, max_value=20_000).map(lambda ms: T0 + timedelta(milliseconds=ms)),
)


@settings(max_examples=200, deadline=None)
@given(reads=st.lists(_reads, max_size=40), data=st.data())
def test_order_and_duplicates_do_not_matter_on_arbitrary_reads(reads: list[Read], data: st.DataObject) -> None:
    # Small value sets on purpose: ties in time and RSSI, exact repeats, a foreign antenna (5).
    expected = passages(reads, GATE)
    shuffled = data.draw(st.permutations(reads))
    extra = data.draw(st.lists(st.sampled_from(reads), max_size=20)) if reads else []
    assert passages(shuffled + extra, GATE) == expected
    for p in expected:
        assert p.first_ts <= p.last_ts
        assert (p.direction is None) == (p.reason is not None) == (p.from_location is None)


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=10**6),
    gap_s=st.floats(min_value=GATE.absent_after_s + 0.001, max_value=3600.0),
    first=st.sampled_from(["inbound", "outbound"]),
    second=st.sampled_from(["inbound", "outbound"]),
)
def test_passes_separated_by_more_than_absent_after_are_separate(
    seed: int, gap_s: float, first: Literal["inbound", "outbound"], second: Literal["inbound", "outbound"]
) -> None:
    rng = random.Random(seed)
    a = simulate_pass(rng, _epc(1), first, 0.0)
    start_b = (max(r.ts for r in a) - T0).total_seconds() + gap_s
    b = simulate_pass(rng, _epc(1), second, start_b)
    result = passages(a + b, GATE)
    assert len(result) == 2
    assert [p.direction for p in result] == [first, second]


# --- the rules one by one ---------------------------------------------------------------------------------


def _r(antenna: int, rssi: float, ms: int, epc: str = "E1") -> Read:
    return Read(epc=epc, antenna=antenna, rssi=rssi, ts=T0 + timedelta(milliseconds=ms))


def test_inbound_outbound_and_event_time() -> None:
    inbound = [_r(1, -50, 0), _r(1, -40, 100), _r(3, -55, 300), _r(3, -42, 800), _r(2, -60, 900)]
    [p] = passages(inbound, GATE)
    assert (p.direction, p.from_location, p.to_location) == ("inbound", "DOCK-1", "STAGING-1")
    assert (p.outer_peak_ts, p.inner_peak_ts, p.ts) == (
        T0 + timedelta(milliseconds=100),
        T0 + timedelta(milliseconds=800),
        T0 + timedelta(milliseconds=800),
    )
    assert (p.first_ts, p.last_ts, p.reads) == (T0, T0 + timedelta(milliseconds=900), 5)

    outbound = [_r(4, -40, 0), _r(3, -50, 100), _r(1, -45, 600), _r(2, -41, 700)]
    [p] = passages(outbound, GATE)
    assert (p.direction, p.from_location, p.to_location) == ("outbound", "STAGING-1", "DOCK-1")
    assert p.ts == T0 + timedelta(milliseconds=700)


def test_peaks_too_close() -> None:
    reads = [_r(1, -50, 0), _r(1, -40, 500), _r(3, -41, 650), _r(3, -50, 1000)]
    [p] = passages(reads, GATE)
    assert (p.direction, p.from_location, p.to_location, p.reason) == (None, None, None, "peaks_too_close")
    assert p.ts == T0 + timedelta(milliseconds=650)
    # exactly min_peak_separation_s apart is far enough
    [p] = passages([*reads[:2], _r(3, -41, 700), reads[3]], GATE)
    assert p.direction == "inbound"


def test_peak_ties_go_to_the_earliest_read() -> None:
    # Outer: -40 at 0 and at 900; inner -40 at 500. Earliest tie wins: outer 0 < inner 500 -> inbound.
    reads = [_r(1, -40, 0), _r(2, -40, 900), _r(1, -60, 100), _r(3, -40, 500), _r(4, -40, 1500), _r(3, -70, 600)]
    [p] = passages(reads, GATE)
    assert (p.outer_peak_ts, p.inner_peak_ts, p.direction) == (T0, T0 + timedelta(milliseconds=500), "inbound")


def test_zone_needs_min_reads_within_the_confirm_window() -> None:
    # Inner reads 2.5 s apart: never two within 2 s, so only the outer zone counts.
    reads = [_r(1, -50, 0), _r(2, -45, 300), _r(3, -45, 1000), _r(3, -45, 3500)]
    [p] = passages(reads, GATE)
    assert (p.direction, p.reason, p.inner_peak_ts) == (None, "one_zone_only", None)
    # Two reads at the same instant on the two inner antennas are one sighting.
    [p] = passages([*reads[:2], _r(3, -45, 1000), _r(4, -44, 1000)], GATE)
    assert p.reason == "one_zone_only"
    # Exactly confirm_window_s apart is within the window.
    [p] = passages([*reads[:2], _r(3, -45, 1000), _r(3, -44, 3000)], GATE)
    assert p.direction == "inbound"


def test_floor_and_foreign_antennas() -> None:
    at_floor = GATE.rssi_floor_dbm
    reads = [_r(1, at_floor, 0), _r(1, at_floor, 100), _r(3, at_floor - 0.1, 900), _r(3, -40, 1000)]
    reads += [_r(9, -30, 950), _r(9, -30, 960), _r(3, math.nan, 980)]
    [p] = passages(reads, GATE)
    assert (p.reason, p.reads) == ("one_zone_only", 3)  # the floor itself is kept, 9 is another gate


def test_weak_and_foreign_reads_do_not_keep_a_passage_open() -> None:
    reads = [_r(1, -50, 0), _r(3, -50, 500)]
    reads += [_r(1, -80, 5000 * k) for k in range(1, 5)] + [_r(9, -40, 5000 * k + 10) for k in range(1, 5)]
    reads += [_r(1, -50, 20_000), _r(3, -50, 20_500)]
    assert len(passages(reads, GATE)) == 2


def test_gap_of_exactly_absent_after_splits() -> None:
    absent_ms = int(GATE.absent_after_s * 1000)
    assert len(passages([_r(1, -50, 0), _r(1, -50, absent_ms - 1)], GATE)) == 1
    assert len(passages([_r(1, -50, 0), _r(1, -50, absent_ms)], GATE)) == 2


def test_epc_case_and_time_zone_do_not_split_a_tag() -> None:
    cet = timezone(timedelta(hours=1))
    reads = [
        Read("3074257BF7194E4000001A85", 1, -50, T0),
        Read("3074257bf7194e4000001a85", 1, -50, T0.astimezone(cet)),  # the same read, other spelling
        Read("3074257bf7194e4000001a85", 1, -45, T0 + timedelta(milliseconds=200)),
    ]
    [p] = passages(reads, GATE)
    assert (p.epc, p.reads, p.first_ts.tzinfo) == ("3074257BF7194E4000001A85", 2, UTC)


def test_closed_passages() -> None:
    reads = [_r(1, -50, 0), _r(1, -40, 200), _r(3, -40, 900), _r(3, -50, 1000, epc="E1")]
    reads += [_r(1, -50, 4000, epc="E2"), _r(1, -40, 4100, epc="E2")]
    last_e1 = T0 + timedelta(milliseconds=1000)
    absent = timedelta(seconds=GATE.absent_after_s)
    assert closed_passages(reads, GATE, last_e1 + absent - timedelta(microseconds=1)) == []
    [p] = closed_passages(reads, GATE, last_e1 + absent)
    assert (p.epc, p.direction) == ("E1", "inbound")
    assert [p.epc for p in closed_passages(reads, GATE, T0 + timedelta(hours=1))] == ["E1", "E2"]
    # A closed passage is never changed by reads at or after now.
    now = last_e1 + absent
    later = [_r(3, -30, int((now - T0).total_seconds() * 1000) + k * 100) for k in range(5)]
    assert closed_passages(reads + later, GATE, now) == closed_passages(reads, GATE, now)


@pytest.mark.parametrize(
    "changes",
    [
        {"outer_antennas": frozenset()},
        {"inner_antennas": frozenset({2, 3})},
        {"inner_location": "DOCK-1"},
        {"outer_location": ""},
        {"min_reads": 0},
        {"absent_after_s": 0.0},
        {"confirm_window_s": -1.0},
    ],
)
def test_gate_config_is_validated(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        replace(GATE, **changes)  # type: ignore[arg-type]


def test_min_reads_one_and_defaults() -> None:
    gate = replace(GATE, min_reads=1)
    [p] = passages([_r(1, -50, 0), _r(3, -50, 500)], gate)
    assert p.direction == "inbound"
    assert (GATE.rssi_floor_dbm, GATE.min_reads, GATE.confirm_window_s) == (-75.0, 2, 2.0)
    assert (GATE.absent_after_s, GATE.min_peak_separation_s) == (6.0, 0.2)


# --- the passage -> reason / posting mapping, shared by the sweep and the replay ------------------


def test_a_directed_passage_of_a_known_serial_moves_one_unit_from_outer_to_inner() -> None:
    [p] = passages(simulate_pass(random.Random(3), _epc(1), "inbound", 0.0), GATE)
    reason = passage_reason(p, "sgtin", "SKU-B")
    posting = passage_posting(p, "SKU-B", "1001", reason)
    assert reason is None and posting is not None
    assert (posting.sku, posting.qty, posting.from_location, posting.to_location, posting.serial, posting.ts) == (
        "SKU-B", 1, "DOCK-1", "STAGING-1", "1001", p.ts)


@pytest.mark.parametrize(("scheme", "sku", "reason"), [
    ("sscc", None, "not_a_trade_item"),
    (None, None, "not_a_trade_item"),  # undecodable: the replay used to give no reason at all
    ("sgtin", None, "unknown_gtin"),
])
def test_a_passage_that_is_no_known_trade_item_is_an_observation(scheme: str | None, sku: str | None,
                                                                    reason: str) -> None:
    [p] = passages(simulate_pass(random.Random(3), _epc(1), "inbound", 0.0), GATE)
    assert passage_reason(p, scheme, sku) == reason
    assert passage_posting(p, sku, None, passage_reason(p, scheme, sku)) is None


def test_a_passage_without_direction_keeps_its_own_reason_and_moves_nothing() -> None:
    [p] = passages(simulate_pass(random.Random(7), _epc(1), "inbound", 0.0, antennas=OUTER), GATE)
    assert passage_reason(p, "sgtin", "SKU-B") == "one_zone_only"
    assert passage_posting(p, "SKU-B", "1001", "one_zone_only") is None
