"""Great-circle distance, geofences (circle and polygon) and dwell-confirmed fence crossings.

Pure and deterministic. Conventions:

* Coordinates are WGS84 degrees. ``Circle`` takes ``(lat, lon)`` like every function here;
  ``Polygon.points`` are ``(lon, lat)`` pairs, GeoJSON order, as the contract's
  ``PUT /geofences`` sends them. A polygon may be given closed (last point = first) or open; it is
  stored open, so both spellings are the same value.
* Distances use the haversine formula on a sphere of the mean Earth radius (6371.0088 km); the
  error against the ellipsoid is below 0.5 %, far inside what a geofence or an ETA needs.
* Point-in-polygon is a ray cast in the (lon, lat) plane: edges are straight lines in degrees.
  That is exact enough for yard- and city-sized fences; a polygon must not cross the
  antimeridian (split it in two).
* Boundaries are inside: a point on a circle's radius or on a polygon's edge (within
  ``EDGE_TOLERANCE_M`` / ``EDGE_TOLERANCE_DEG``) is contained. The tolerance is far below GPS
  noise; it only makes "exactly on the edge" a stable answer despite floating-point rounding.
* ``contains`` is ``contains_many`` on one point, so the scalar and vectorised answers can never
  disagree, not even in the last bit at the edge.
* Aware timestamps are normalised to UTC on the way in, so equal instants in different offsets
  sort and de-duplicate as one; output times are UTC.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

EARTH_RADIUS_KM: Final = 6371.0088
EDGE_TOLERANCE_M: Final = 1e-3  # 1 mm: a point this close to a circle's radius is on it, so inside
EDGE_TOLERANCE_DEG: Final = 1e-9  # ~0.1 mm: the same for a polygon's edges, in degrees

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def as_utc(ts: datetime) -> datetime:
    """``ts`` in UTC when it is aware; naive timestamps are left alone (they cannot be converted)."""
    return ts.astimezone(UTC) if ts.tzinfo is not None else ts


# --- distance ------------------------------------------------------------------------------------


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in kilometres between two WGS84 points."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    # min() guards asin against h = 1 + epsilon for antipodal points.
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def haversine_km_many(lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike,
                      lon2: npt.ArrayLike) -> FloatArray:
    """``haversine_km`` element-wise over broadcastable arrays."""
    p1, p2 = np.radians(np.asarray(lat1, dtype=np.float64)), np.radians(np.asarray(lat2, dtype=np.float64))
    dl = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    result: FloatArray = 2 * EARTH_RADIUS_KM * np.arcsin(np.minimum(1.0, np.sqrt(h)))
    return result


def path_km(lats: npt.ArrayLike, lons: npt.ArrayLike) -> float:
    """Length of the polyline through the points, in kilometres (0 for fewer than two points)."""
    la, lo = np.asarray(lats, dtype=np.float64), np.asarray(lons, dtype=np.float64)
    if la.size < 2:
        return 0.0
    return float(haversine_km_many(la[:-1], lo[:-1], la[1:], lo[1:]).sum())


# --- fences --------------------------------------------------------------------------------------


def _check_lat_lon(lat: float, lon: float, what: str) -> None:
    if not (math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"{what}: ({lat}, {lon}) is not a WGS84 latitude/longitude")


@dataclass(frozen=True, slots=True)
class Circle:
    lat: float
    lon: float
    radius_m: float

    def __post_init__(self) -> None:
        _check_lat_lon(self.lat, self.lon, "circle centre")
        if not (math.isfinite(self.radius_m) and self.radius_m > 0):
            raise ValueError(f"circle radius must be a positive number of metres, got {self.radius_m}")


@dataclass(frozen=True, slots=True)
class Polygon:
    """A simple polygon; ``points`` are (lon, lat), GeoJSON order, stored without the closing point."""

    points: tuple[tuple[float, float], ...]
    # The ring as arrays, built once: a fence is tested against thousands of fixes.
    _xs: FloatArray = field(init=False, repr=False, compare=False, hash=False)
    _ys: FloatArray = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        pts = tuple((float(lon), float(lat)) for lon, lat in self.points)
        if len(pts) > 1 and pts[0] == pts[-1]:
            pts = pts[:-1]
        for lon, lat in pts:
            _check_lat_lon(lat, lon, "polygon vertex")
        if len(set(pts)) < 3:
            raise ValueError("a polygon needs at least three distinct vertices")
        object.__setattr__(self, "points", pts)
        object.__setattr__(self, "_xs", np.array([p[0] for p in pts], dtype=np.float64))
        object.__setattr__(self, "_ys", np.array([p[1] for p in pts], dtype=np.float64))


Fence = Circle | Polygon


def contains_many(fence: Fence, lats: npt.ArrayLike, lons: npt.ArrayLike) -> BoolArray:
    """For each point, whether the fence contains it (boundary included). Vectorised over points."""
    la = np.asarray(lats, dtype=np.float64)
    lo = np.asarray(lons, dtype=np.float64)
    if isinstance(fence, Circle):
        d_m = haversine_km_many(fence.lat, fence.lon, la, lo) * 1000.0
        inside: BoolArray = d_m <= fence.radius_m + EDGE_TOLERANCE_M
        return inside
    return _in_polygon(fence, lo, la)


def _in_polygon(poly: Polygon, px: FloatArray, py: FloatArray) -> BoolArray:
    # Even-odd ray cast towards +x, looping over edges (few) and vectorised over points (many).
    inside = np.zeros(np.broadcast(px, py).shape, dtype=np.bool_)
    on_edge = np.zeros_like(inside)
    xs, ys = poly._xs, poly._ys
    n = xs.size
    for i in range(n):
        x1, y1, x2, y2 = xs[i], ys[i], xs[(i + 1) % n], ys[(i + 1) % n]
        straddles = (y1 > py) != (y2 > py)
        # Only evaluated where the edge straddles the ray, so y2 != y1 there.
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= straddles & (px < x_at)
        # Distance from the point to the edge segment, in degrees: on the edge counts as inside.
        dx, dy = x2 - x1, y2 - y1
        length2 = dx * dx + dy * dy
        t = np.clip(((px - x1) * dx + (py - y1) * dy) / length2, 0.0, 1.0) if length2 > 0 else 0.0
        on_edge |= np.hypot(px - (x1 + t * dx), py - (y1 + t * dy)) <= EDGE_TOLERANCE_DEG
    result: BoolArray = inside | on_edge
    return result


def contains(fence: Fence, lat: float, lon: float) -> bool:
    """Whether the fence contains the point (boundary included); same answer as ``contains_many``."""
    return bool(contains_many(fence, np.array([lat]), np.array([lon]))[0])


def centre(fence: Fence) -> tuple[float, float]:
    """(lat, lon) of the fence's centre: a circle's centre, a polygon's area centroid.

    The centroid of a concave polygon can fall outside it; it is only a target for distances.
    A degenerate (zero-area) ring falls back to the mean of its vertices.
    """
    if isinstance(fence, Circle):
        return fence.lat, fence.lon
    # Shoelace centroid, shifted to the first vertex so that large coordinates do not cancel.
    x, y = fence._xs - fence._xs[0], fence._ys - fence._ys[0]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    area2 = float(cross.sum())
    if abs(area2) < 1e-18:
        return float(fence._ys.mean()), float(fence._xs.mean())
    cx = float(((x + xn) * cross).sum()) / (3 * area2)
    cy = float(((y + yn) * cross).sum()) / (3 * area2)
    return cy + float(fence._ys[0]), cx + float(fence._xs[0])


def distance_to_centre_km(fence: Fence, lat: float, lon: float) -> float:
    c_lat, c_lon = centre(fence)
    return haversine_km(lat, lon, c_lat, c_lon)


# --- fixes and crossings -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fix:
    """An accepted (filtered) GPS position of a vehicle."""

    ts: datetime
    lat: float
    lon: float
    speed_kmh: float | None = None


@dataclass(frozen=True, slots=True)
class Dwell:
    """How long a vehicle must be on the other side of a fence before the change counts.

    A side change is confirmed once the vehicle has been on the new side for ``fixes``
    consecutive fixes, or for ``seconds`` continuously (from the first fix on the new side to a
    later fix still on it, no fix on the old side in between), whichever comes first. Either
    criterion can be switched off: ``seconds=math.inf`` counts fixes only, a huge ``fixes`` counts
    time only. The crossing's time is the first fix on the new side, so confirmation delays when
    the crossing is *known*, never when it is said to have *happened*.
    """

    fixes: int = 3
    seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.fixes < 1:
            raise ValueError("Dwell.fixes must be at least 1")
        if not self.seconds >= 0:
            raise ValueError("Dwell.seconds must be >= 0")


CrossingKind = Literal["enter", "exit"]


@dataclass(frozen=True, slots=True)
class Crossing:
    kind: CrossingKind
    ts: datetime  # the first fix on the new side


def sorted_fixes(fixes: Iterable[Fix]) -> list[Fix]:
    """Distinct fixes in event-time order, times in UTC.

    Exact repeats (at-least-once delivery) collapse into one. Two different fixes with the same
    time are both kept, ordered by their coordinates so the order is still input-independent;
    ``positions.filter_positions`` drops such duplicates before they get here.
    """
    unique = {Fix(as_utc(f.ts), f.lat, f.lon, f.speed_kmh) for f in fixes}
    return sorted(unique, key=lambda f: (f.ts, f.lat, f.lon, -1.0 if f.speed_kmh is None else f.speed_kmh))


def confirmed_runs(ts: list[datetime], sides: list[bool], dwell: Dwell) -> list[tuple[int, int, bool]]:
    """Every dwell-confirmed run of same-side fixes as ``(first index, confirming index, side)``.

    ``ts`` must be sorted. A run is a maximal stretch of consecutive fixes on one side; it is
    confirmed at the first fix where it has lasted ``dwell.fixes`` fixes or ``dwell.seconds``.
    Runs that never get confirmed are left out: they are drift.
    """
    runs: list[tuple[int, int, bool]] = []
    start = 0
    confirmed = False
    for i, side in enumerate(sides):
        if i > 0 and side != sides[i - 1]:
            start, confirmed = i, False
        if not confirmed and (i - start + 1 >= dwell.fixes
                              or (ts[i] - ts[start]).total_seconds() >= dwell.seconds):
            runs.append((start, i, side))
            confirmed = True
    return runs


def crossings(fixes: Iterable[Fix], fence: Fence, dwell: Dwell,
              initially_inside: bool | None = None) -> list[Crossing]:
    """The dwell-confirmed enters and exits of the fence, in event-time order.

    The vehicle starts on the side ``initially_inside`` says; with None, the first confirmed side
    just sets the state and is no crossing. Jitter across the edge that never stays long enough
    on the other side produces nothing.
    """
    track = sorted_fixes(fixes)
    if not track:
        return []
    inside = contains_many(fence, [f.lat for f in track], [f.lon for f in track]).tolist()
    ts = [f.ts for f in track]
    state = initially_inside
    result: list[Crossing] = []
    for start, _, side in confirmed_runs(ts, inside, dwell):
        if side == state:
            continue  # e.g. a confirmed run after an unconfirmed excursion to the other side
        if state is not None:
            result.append(Crossing("enter" if side else "exit", ts[start]))
        state = side
    return result
