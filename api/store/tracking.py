"""Following a shipment: its GPS track, the public tracking lookup, and cancellation.

Cancellation is here rather than with the planned record (``api/store/shipments.py``) because it
is the one change to a shipment's tracked state the API makes itself; everything else in
``shipments.status``, ``shipment_events`` and ``shipment_state`` is written by ingest.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

from api.errors import ConflictError
from api.pagination import Key
from api.store.filters import Where
from api.store.records import Row
from core.geo import Circle, Fence, Polygon, distance_to_centre_km

CANCELLABLE = ("planned", "loading", "in_transit", "arrived")


# --- the track -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """Event-time span of a shipment's track: loading (or creation) to delivery or cancellation (or now)."""

    start: datetime
    end: datetime | None


def span_of(conn: psycopg.Connection, shipment: Row) -> Span:
    at: dict[str, datetime] = dict(conn.execute("SELECT type, ts FROM shipment_events WHERE shipment = %s "
                           "AND type IN ('loading', 'delivered', 'cancelled')", (shipment["ref"],)).fetchall())
    return Span(at.get("loading") or shipment["created_at"], at.get("delivered") or at.get("cancelled"))


def track(conn: psycopg.Connection, shipment: Row, include_filtered: bool, after: Key | None,
          limit: int) -> list[Row]:
    """Positions of the trackers riding the shipment's vehicle inside its span, in event-time order.

    ``(ts, device_id, msg_id)`` is unique (one position per message) and is the page key.
    """
    span = span_of(conn, shipment)
    w = Where()
    w.add("p.device_id IN (SELECT device_id FROM devices WHERE kind = 'gps_tracker' AND vehicle = %(vehicle)s)",
          vehicle=shipment["vehicle"])
    w.add("p.ts >= %(start)s AND p.ts <= coalesce(%(end)s, now())", start=span.start, end=span.end)
    if not include_filtered:
        w.add("p.filter_reason IS NULL")
    if after is not None:
        w.add("(p.ts, p.device_id, p.msg_id) > (%(a_ts)s, %(a_dev)s, %(a_msg)s)",
              a_ts=after[0], a_dev=after[1], a_msg=after[2])
    query = ("SELECT p.ts, p.lat, p.lon, p.speed_kmh, p.heading_deg, p.device_id, p.msg_id, p.filter_reason "
             f"FROM positions p {w.sql()} ORDER BY p.ts, p.device_id, p.msg_id LIMIT %(limit)s")
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, {**w.params, "limit": limit}).fetchall()


# --- cancellation --------------------------------------------------------------------------------


def cancel(conn: psycopg.Connection, ref: str, detail: str) -> bool:
    """Cancel an open shipment; False if there is no such shipment, 409 if it is already finished.

    The row lock orders this against ingest's status update for the same shipment, so a delivery
    scan applied concurrently either lands first (and the cancel is refused) or after (and core's
    rule that a delivery before the cancellation wins applies on the next derivation).
    """
    with conn.transaction():
        row = conn.execute("SELECT status FROM shipments WHERE ref = %s FOR UPDATE", (ref,)).fetchone()
        if row is None:
            return False
        if row[0] not in CANCELLABLE:
            raise ConflictError(f"shipment {ref!r} is {row[0]}; only a planned, loading, in-transit or arrived "
                                "shipment can be cancelled")
        conn.execute("UPDATE shipments SET status = 'cancelled', cancelled_at = now(), updated_at = now() "
                     "WHERE ref = %s", (ref,))
        # At most one cancelled event per shipment (unique per type); now() is the transaction's
        # time, so the event and cancelled_at agree to the microsecond.
        conn.execute("INSERT INTO shipment_events (shipment, ts, type, detail) VALUES (%s, now(), 'cancelled', %s) "
                     "ON CONFLICT (shipment, type) DO NOTHING", (ref, detail))
    return True


# --- the public page -----------------------------------------------------------------------------


def _digest(token: str) -> str:
    # md5 here only blinds the lookup key (see by_public_token), it protects nothing by itself:
    # Postgres' md5(text) is immutable, so it can back an expression index, and a collision
    # cannot help anyone because the token itself is compared afterwards.
    return hashlib.md5(token.encode(), usedforsecurity=False).hexdigest()


def by_public_token(conn: psycopg.Connection, token: str) -> Row | None:
    """The shipment with this public token, or None.

    Looked up by a digest of the token, not the token: comparing the secret itself in an index
    (or a string ==) takes longer the more leading characters match, which over many requests can
    tell a guesser how close they are. Comparing digests leaks only how close two digests are,
    which says nothing about the token. The final check is constant-time.
    """
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT ref, status, vehicle, destination, public_token FROM shipments "
                          "WHERE md5(public_token) = %s", (_digest(token),)).fetchone()
    if row is None or not hmac.compare_digest(str(row["public_token"]).encode(), token.encode()):
        return None
    return row


def _fence(row: Row) -> Fence:
    if row["type"] == "circle":
        return Circle(row["lat"], row["lon"], row["radius_m"])
    return Polygon(tuple((float(p[0]), float(p[1])) for p in row["coordinates"]))


def initial_distance_km(conn: psycopg.Connection, shipment: Row, loading_at: datetime | None) -> float | None:
    """Distance to the destination at the start of the trip: from the vehicle's first usable fix at
    or after loading (in the yard, so the origin) to the destination's centre; None when unknown."""
    if loading_at is None:
        return None
    fix = conn.execute(
        "SELECT p.lat, p.lon FROM positions p JOIN devices d ON d.device_id = p.device_id "
        "WHERE d.kind = 'gps_tracker' AND d.vehicle = %s AND p.ts >= %s AND p.filter_reason IS NULL "
        "AND p.lat IS NOT NULL AND p.lon IS NOT NULL ORDER BY p.ts LIMIT 1",
        (shipment["vehicle"], loading_at)).fetchone()
    if fix is None:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        fence_row = cur.execute("SELECT type, lat, lon, radius_m, coordinates FROM geofences WHERE code = %s",
                                (shipment["destination"],)).fetchone()
    if fence_row is None:
        return None
    return distance_to_centre_km(_fence(fence_row), float(fix[0]), float(fix[1]))
