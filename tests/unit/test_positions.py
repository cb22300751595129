from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from core.contract import Position, decode_payload
from core.geo import Fix
from core.positions import FilterReason, PositionIn, accepted_fixes, filter_positions, from_record

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
KM_PER_DEG = 111.195


def pos(seconds: float, lat: float | None = 53.0, lon: float | None = 10.0, *, valid: bool = True,
        key: str | None = None) -> PositionIn:
    return PositionIn(T0 + timedelta(seconds=seconds), lat, lon, valid, key or f"m{seconds:08.1f}")


def reasons(positions: list[PositionIn], **kw: float) -> list[str | None]:
    return [r for _, r in filter_positions(positions, now=NOW, **kw)]


def test_all_good_positions_pass() -> None:
    track = [pos(60 * i, 53.0 + 0.01 * i) for i in range(10)]  # ~67 km/h
    assert reasons(track) == [None] * 10


def test_invalid_fix() -> None:
    assert reasons([pos(0), pos(60, valid=False), pos(120, None, None), pos(180, 91.0, 10.0),
                    pos(240, math.nan, 10.0)]) == [None, "invalid_fix", "invalid_fix", "invalid_fix", "invalid_fix"]


def test_null_island() -> None:
    assert reasons([pos(0, 0.0, 0.0), pos(60, 5e-7, -5e-7), pos(120, 0.0, 10.0)]) == [
        FilterReason.NULL_ISLAND, FilterReason.NULL_ISLAND, None]


def test_future_against_now_and_against_receive_time() -> None:
    late = NOW + timedelta(seconds=301)
    edge = NOW + timedelta(seconds=300)
    got = filter_positions([PositionIn(late, 53.0, 10.0, True, "a"), PositionIn(edge - timedelta(hours=5), 53.0, 10.0,
                                                                                 True, "b")], now=NOW)
    assert [r for _, r in got] == [None, "future"]
    # Judged against the receive time: the same row filtered again tomorrow keeps its reason.
    stored = PositionIn(late, 53.0, 10.0, True, "a", received_at=NOW)
    assert reasons_of(filter_positions([stored], now=NOW + timedelta(days=1))) == ["future"]
    ok = PositionIn(edge, 53.0, 10.0, True, "a", received_at=NOW)
    assert reasons_of(filter_positions([ok], now=NOW)) == [None]


def reasons_of(result: list[tuple[PositionIn, str | None]]) -> list[str | None]:
    return [r for _, r in result]


def test_duplicate_time_keeps_the_first_key() -> None:
    got = filter_positions([pos(60, 53.001, key="z"), pos(0), pos(60, 53.002, key="a")], now=NOW)
    assert [(p.key, r) for p, r in got] == [("m000000.0", None), ("a", None), ("z", "duplicate_time")]


def test_duplicate_time_only_against_accepted_positions() -> None:
    # The first at t=60 is filtered (invalid), so the second at t=60 is not a duplicate.
    got = filter_positions([pos(0), pos(60, key="a", valid=False), pos(60, 53.001, key="b")], now=NOW)
    assert reasons_of(got) == [None, "invalid_fix", None]


def test_impossible_jump_from_the_last_accepted_position() -> None:
    wild = pos(60, 53.5)  # 55 km in a minute
    good = pos(120, 53.01)  # ~ 11 km/h from the start, far from the wild fix
    assert reasons([pos(0), wild, good]) == [None, "impossible_jump", None]


def test_speed_limit_is_configurable_and_inclusive() -> None:
    # 100 km/h exactly: 100/KM_PER_DEG degrees in one hour.
    track = [pos(0, 53.0), pos(3600, 53.0 + 100 / KM_PER_DEG)]
    assert reasons(track, max_speed_kmh=100.5) == [None, None]
    assert reasons(track, max_speed_kmh=99.5) == [None, "impossible_jump"]
    assert reasons(track) == [None, None]


def test_long_gap_is_not_a_jump() -> None:
    # 300 km after 3 h offline is 100 km/h: plausible.
    assert reasons([pos(0, 53.0), pos(3 * 3600, 53.0 + 300 / KM_PER_DEG)]) == [None, None]


def test_wild_first_fix_is_never_an_anchor() -> None:
    # The first fix is 49 km off: the good track after it confirms itself (each fix agrees with
    # the next), so only the wild fix is a jump; before the fix it used to reject 14 good ones.
    track = [pos(0, 53.0 + 49 / KM_PER_DEG)] + [pos(60 * i, 53.0) for i in range(1, 20)]
    got = reasons(track)
    assert got[0] == "impossible_jump"
    assert got[1:] == [None] * 19


def test_wild_fix_after_a_confirmed_one_is_rejected() -> None:
    track = [pos(0, 53.0), pos(60, 53.0), pos(120, 53.0 + 49 / KM_PER_DEG), pos(180, 53.0)]
    assert reasons(track) == [None, None, "impossible_jump", None]


def test_anchored_window_trusts_its_seed() -> None:
    # A window seeded with a confirmed fix: a jump from it is rejected even with no later fix.
    track = [pos(0, 53.0), pos(60, 53.0 + 49 / KM_PER_DEG)]
    assert [r for _, r in filter_positions(track, now=NOW, anchored=True)] == [None, "impossible_jump"]


def test_every_position_is_returned_sorted() -> None:
    track = [pos(120), pos(0, 0.0, 0.0), pos(60, valid=False)]
    got = filter_positions(track, now=NOW)
    assert [p.ts for p, _ in got] == sorted(p.ts for p in track)
    assert len(got) == 3


def test_accepted_fixes() -> None:
    got = filter_positions([pos(0), pos(60, valid=False), PositionIn(T0 + timedelta(seconds=120), 53.001, 10.0, True,
                                                                     "x", speed_kmh=12.0)], now=NOW)
    assert accepted_fixes(got) == [Fix(T0, 53.0, 10.0), Fix(T0 + timedelta(seconds=120), 53.001, 10.0, 12.0)]


def test_nmea_and_json_positions_from_the_contract() -> None:
    rmc_void = "$GPRMC,123519,V,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*7D"
    rmc_good = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
    payload = [
        {"msg_id": "n1", "ts": (NOW - timedelta(minutes=2)).isoformat(), "nmea": rmc_void},
        {"msg_id": "n2", "ts": (NOW - timedelta(minutes=1)).isoformat(), "nmea": rmc_good},
        {"msg_id": "j1", "ts": NOW.isoformat(), "lat": 48.1173, "lon": 11.5167, "speed_kmh": 40},
        {"msg_id": "j2", "ts": (NOW + timedelta(seconds=30)).isoformat(), "lat": 0, "lon": 0},
    ]
    decoded = decode_payload(payload, "trk-1", "position", NOW)
    records = [r for r in decoded.records if isinstance(r, Position)]
    assert len(records) == 4, decoded.rejections
    got = {p.key: r for p, r in filter_positions([from_record(r) for r in records], now=NOW)}
    assert got == {"n1": "invalid_fix", "n2": None, "j1": None, "j2": "null_island"}


_positions = st.builds(
    PositionIn,
    ts=st.integers(0, 40).map(lambda m: T0 + timedelta(minutes=m)),
    lat=st.one_of(st.none(), st.just(0.0), st.floats(52.9, 53.3)),
    lon=st.one_of(st.none(), st.just(0.0), st.floats(9.9, 10.1)),
    fix_valid=st.booleans(),
    key=st.text("abcdef", min_size=1, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(positions=st.lists(_positions, max_size=30, unique_by=lambda p: p.key), data=st.data())
def test_filter_is_order_independent(positions: list[PositionIn], data: st.DataObject) -> None:
    expected = filter_positions(positions, now=NOW, max_speed_kmh=60)
    shuffled = data.draw(st.permutations(positions))
    assert filter_positions(shuffled, now=NOW, max_speed_kmh=60) == expected
    accepted = [p for p, r in expected if r is None]
    assert len({p.ts for p in accepted}) == len(accepted)
