from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.geo import (
    Circle,
    Crossing,
    Dwell,
    Fix,
    Polygon,
    centre,
    contains,
    contains_many,
    crossings,
    haversine_km,
    haversine_km_many,
    path_km,
)

T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
M_PER_DEG = 111_195.0  # metres per degree of latitude on the 6371 km sphere


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / M_PER_DEG, lon + east_m / (M_PER_DEG * math.cos(math.radians(lat)))


# --- distance ------------------------------------------------------------------------------------


def test_haversine_berlin_paris() -> None:
    d = haversine_km(52.5200, 13.4050, 48.8566, 2.3522)
    assert d == pytest.approx(878, abs=2)
    assert haversine_km(48.8566, 2.3522, 52.5200, 13.4050) == pytest.approx(d)


def test_haversine_edge_cases() -> None:
    assert haversine_km(10.0, 20.0, 10.0, 20.0) == 0.0
    assert haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * 6371.0088)  # antipodal, no domain error
    assert haversine_km(0.0, 0.0, 1.0, 0.0) == pytest.approx(111.195, abs=0.01)


def test_haversine_many_matches_scalar() -> None:
    rng = np.random.default_rng(1)
    lat1, lat2 = rng.uniform(-89, 89, 200), rng.uniform(-89, 89, 200)
    lon1, lon2 = rng.uniform(-179, 179, 200), rng.uniform(-179, 179, 200)
    many = haversine_km_many(lat1, lon1, lat2, lon2)
    for i in range(200):
        assert many[i] == pytest.approx(haversine_km(lat1[i], lon1[i], lat2[i], lon2[i]), rel=1e-12)


def test_path_km() -> None:
    assert path_km([52.0], [13.0]) == 0.0
    assert path_km([0.0, 1.0, 0.0], [0.0, 0.0, 0.0]) == pytest.approx(2 * 111.195, abs=0.02)


# --- fences --------------------------------------------------------------------------------------

SQUARE = Polygon(((10.0, 50.0), (10.1, 50.0), (10.1, 50.1), (10.0, 50.1)))
# A "U" open to the north: the notch between x 10.03 and 10.07 above y 50.03 is outside.
U_SHAPE = Polygon(((10.0, 50.0), (10.1, 50.0), (10.1, 50.1), (10.07, 50.1), (10.07, 50.03),
                   (10.03, 50.03), (10.03, 50.1), (10.0, 50.1), (10.0, 50.0)))


def test_polygon_closed_and_open_are_the_same_value() -> None:
    closed = Polygon(((10.0, 50.0), (10.1, 50.0), (10.1, 50.1), (10.0, 50.1), (10.0, 50.0)))
    assert closed == SQUARE
    assert len(U_SHAPE.points) == 8


@pytest.mark.parametrize("points", [((10.0, 50.0), (10.1, 50.0)), ((10.0, 50.0), (10.0, 50.0), (10.1, 50.0)),
                                    ((10.0, 95.0), (10.1, 50.0), (10.1, 50.1))])
def test_polygon_validation(points: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValueError):
        Polygon(points)


def test_circle_validation() -> None:
    with pytest.raises(ValueError):
        Circle(52.0, 13.0, 0.0)
    with pytest.raises(ValueError):
        Circle(91.0, 13.0, 10.0)


def test_point_in_square() -> None:
    assert contains(SQUARE, 50.05, 10.05)
    assert not contains(SQUARE, 50.05, 10.15)
    assert not contains(SQUARE, 49.99, 10.05)
    # Points (lat, lon) against vertices given as (lon, lat): a swapped order would fail here.
    assert not contains(SQUARE, 10.05, 50.05)


def test_point_in_concave_polygon() -> None:
    assert contains(U_SHAPE, 50.01, 10.05)  # the base of the U
    assert contains(U_SHAPE, 50.08, 10.01)  # left arm
    assert contains(U_SHAPE, 50.08, 10.09)  # right arm
    assert not contains(U_SHAPE, 50.08, 10.05)  # in the notch: the ray crosses both arms
    assert not contains(U_SHAPE, 50.05, 10.2)


def test_polygon_boundary_is_inside() -> None:
    assert contains(SQUARE, 50.0, 10.05)  # on the bottom edge
    assert contains(SQUARE, 50.1, 10.1)  # a vertex
    assert contains(U_SHAPE, 50.05, 10.03)  # on the inner edge of the notch
    assert contains(U_SHAPE, 50.03, 10.05)  # on the notch's floor


def test_circle_radius_is_inside() -> None:
    fence = Circle(52.0, 13.0, 250.0)
    lat, lon = offset(52.0, 13.0, 0.0, 0.0)
    assert contains(fence, lat, lon)
    # A point exactly on the radius, by the same formula the fence uses.
    lat, lon = offset(52.0, 13.0, 180.0, 120.0)
    on_radius = Circle(52.0, 13.0, haversine_km(52.0, 13.0, lat, lon) * 1000.0)
    assert contains(on_radius, lat, lon)
    out_lat, out_lon = offset(52.0, 13.0, 251.0, 0.0)
    in_lat, in_lon = offset(52.0, 13.0, 249.0, 0.0)
    assert not contains(fence, out_lat, out_lon)
    assert contains(fence, in_lat, in_lon)


@pytest.mark.parametrize("fence", [SQUARE, U_SHAPE, Circle(50.05, 10.05, 4000.0)])
def test_contains_many_equals_contains(fence: Circle | Polygon) -> None:
    rng = np.random.default_rng(7)
    lats = rng.uniform(49.98, 50.12, 3000)
    lons = rng.uniform(9.98, 10.12, 3000)
    # Add vertices and edge points, where rounding would show first.
    extra = [(50.0, 10.05), (50.1, 10.1), (50.05, 10.03), (50.03, 10.05), (50.1, 10.07)]
    lats = np.concatenate([lats, [p[0] for p in extra]])
    lons = np.concatenate([lons, [p[1] for p in extra]])
    many = contains_many(fence, lats, lons)
    assert many.dtype == np.bool_
    assert many.tolist() == [contains(fence, float(a), float(b)) for a, b in zip(lats, lons, strict=True)]
    assert 0 < many.sum() < many.size


def test_centre() -> None:
    assert centre(Circle(52.0, 13.0, 100.0)) == (52.0, 13.0)
    assert centre(SQUARE) == pytest.approx((50.05, 10.05))
    # An L of three unit squares: (0..2 x 0..1) plus (0..1 x 1..2); its centroid is (5/6, 5/6).
    ell = Polygon(((0.0, 0.0), (2.0, 0.0), (2.0, 1.0), (1.0, 1.0), (1.0, 2.0), (0.0, 2.0)))
    assert centre(ell) == pytest.approx((5 / 6, 5 / 6))
    # Clockwise and counter-clockwise rings give the same centroid.
    assert centre(Polygon(tuple(reversed(ell.points)))) == pytest.approx((5 / 6, 5 / 6))


# --- dwell and crossings -------------------------------------------------------------------------

YARD = Circle(53.55, 10.0, 200.0)


def at(seconds: float, north_m: float, east_m: float = 0.0) -> Fix:
    lat, lon = offset(YARD.lat, YARD.lon, north_m, east_m)
    return Fix(T0 + timedelta(seconds=seconds), lat, lon)


def test_jitter_at_the_edge_gives_no_crossing() -> None:
    rng = random.Random(3)
    # Parked right at the fence: every fix lands a few metres either side of the 200 m radius,
    # never more than two in a row (20 s) outside.
    pattern = "IOIIOOIOIOOIIIOIOOIOIIOIOOIIIOOIO" * 3
    fixes = [at(10 * i, 200 + (rng.uniform(2, 8) if c == "O" else -rng.uniform(2, 8)), rng.uniform(-3, 3))
             for i, c in enumerate(pattern)]
    assert [contains(YARD, f.lat, f.lon) for f in fixes] == [c == "I" for c in pattern]
    assert crossings(fixes, YARD, Dwell(), initially_inside=True) == []
    assert crossings(fixes, YARD, Dwell()) == []


def test_real_exit_gives_exactly_one_crossing_at_the_first_fix_outside() -> None:
    rng = random.Random(5)
    inside = [at(10 * i, rng.uniform(-50, 50), rng.uniform(-50, 50)) for i in range(30)]
    edge = [at(300 + 10 * i, 200 + (5 if i % 2 == 0 else -5)) for i in range(6)]  # jitter, last one inside
    away = [at(360 + 10 * i, 205 + 100 * i) for i in range(20)]
    fixes = inside + edge + away
    assert crossings(fixes, YARD, Dwell(), initially_inside=True) == [Crossing("exit", away[0].ts)]
    assert crossings(fixes, YARD, Dwell()) == [Crossing("exit", away[0].ts)]


def test_first_confirmed_side_sets_state_without_crossing() -> None:
    outside = [at(10 * i, 1000.0) for i in range(5)]
    inside = [at(50 + 10 * i, 0.0) for i in range(5)]
    assert crossings(outside + inside, YARD, Dwell()) == [Crossing("enter", inside[0].ts)]
    assert crossings(outside + inside, YARD, Dwell(), initially_inside=True) == [
        Crossing("exit", outside[0].ts), Crossing("enter", inside[0].ts)]
    assert crossings(outside, YARD, Dwell()) == []
    assert crossings(outside, YARD, Dwell(), initially_inside=True) == [Crossing("exit", outside[0].ts)]
    assert crossings([], YARD, Dwell()) == []


def test_dwell_by_seconds_or_by_fixes() -> None:
    # Sparse fixes: 2 fixes 60 s apart are enough by time even though 10 fixes are asked for.
    sparse = [at(0, 0.0), at(60, 0.0), at(120, 0.0), at(180, 500.0), at(240, 500.0)]
    assert crossings(sparse, YARD, Dwell(fixes=10, seconds=60), initially_inside=True) == [
        Crossing("exit", sparse[3].ts)]
    # One fix outside for 59 s then back: not enough by either criterion.
    brief = [at(0, 0.0), at(60, 500.0), at(119, 500.0), at(125, 0.0), at(130, 0.0)]
    assert crossings(brief, YARD, Dwell(fixes=3, seconds=60), initially_inside=True) == []
    # Dense fixes: 3 consecutive fixes within 2 s count by the number of fixes.
    dense = [at(0, 0.0), at(1, 500.0), at(2, 500.0), at(3, 500.0), at(4, 0.0)]
    assert crossings(dense, YARD, Dwell(fixes=3, seconds=math.inf), initially_inside=True) == [
        Crossing("exit", dense[1].ts)]
    # Dwell(fixes=1) reacts to every fix.
    assert crossings(dense, YARD, Dwell(fixes=1), initially_inside=True) == [
        Crossing("exit", dense[1].ts), Crossing("enter", dense[4].ts)]


def test_dwell_validation() -> None:
    with pytest.raises(ValueError):
        Dwell(fixes=0)
    with pytest.raises(ValueError):
        Dwell(seconds=-1)


def test_equal_instants_in_other_offsets_are_one_fix() -> None:
    cet = timezone(timedelta(hours=1))
    a = at(0, 500.0)
    b = Fix(a.ts.astimezone(cet), a.lat, a.lon)
    fixes = [at(-20, 0.0), at(-10, 0.0), at(-5, 0.0), a, b, at(10, 500.0)]
    # a and b are one fix, so only two fixes outside: not confirmed by 3 fixes / 60 s.
    assert crossings(fixes, YARD, Dwell(), initially_inside=True) == []


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), data=st.data())
def test_crossings_are_order_independent(seed: int, data: st.DataObject) -> None:
    rng = random.Random(seed)
    fixes: list[Fix] = []
    north = 0.0
    for i in range(60):
        north = max(-300.0, min(600.0, north + rng.uniform(-80, 80)))
        fixes.append(at(10 * i + rng.uniform(0, 5), north, rng.uniform(-20, 20)))
    expected = crossings(fixes, YARD, Dwell(), initially_inside=None)
    shuffled = data.draw(st.permutations(fixes))
    repeated = shuffled + data.draw(st.lists(st.sampled_from(fixes), max_size=20))
    assert crossings(repeated, YARD, Dwell(), initially_inside=None) == expected
    # Crossings alternate in kind: drift never gives two enters in a row.
    kinds = [c.kind for c in expected]
    assert all(a != b for a, b in pairwise(kinds))
