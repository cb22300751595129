"""Sites, locations, items, profiles and geofences: create-or-replace with reference checks."""

from __future__ import annotations

import psycopg

from api.errors import ConflictError
from api.schemas.master_data import CircleIn, ItemIn, LocationIn, PolygonIn, ProfileIn, SiteIn
from api.store import references
from api.store.records import Row, Table, upsert

SITES = Table("sites", "code", ("name", "tz", "geofence"))
LOCATIONS = Table("locations", "code", ("site", "type", "name"))
ITEMS = Table("items", "sku", ("name", "gtin", "profile", "reorder_point", "reorder_qty", "lead_time_days",
                               "default_location", "warranty_months"))
PROFILES = Table("profiles", "code", ("temp_min_c", "temp_max_c", "rh_min_pct", "rh_max_pct", "delay_s",
                                      "hysteresis_c", "cumulative_s"))
GEOFENCES = Table("geofences", "code", ("type", "lat", "lon", "radius_m", "coordinates"),
                  json_columns=frozenset({"coordinates"}))


def put_site(conn: psycopg.Connection, code: str, body: SiteIn) -> tuple[Row, bool]:
    with conn.transaction():
        if body.geofence is not None:
            references.require_geofence(conn, body.geofence)
        return upsert(conn, SITES, code, body.model_dump())


def put_location(conn: psycopg.Connection, code: str, body: LocationIn) -> tuple[Row, bool]:
    with conn.transaction():
        references.require_site(conn, body.site)
        return upsert(conn, LOCATIONS, code, body.model_dump())


def put_item(conn: psycopg.Connection, sku: str, body: ItemIn) -> tuple[Row, bool]:
    with conn.transaction():
        if body.profile is not None:
            references.require_profile(conn, body.profile)
        if body.gtin is not None:
            other = conn.execute("SELECT sku FROM items WHERE gtin = %s AND sku <> %s", (body.gtin, sku)).fetchone()
            if other is not None:
                raise ConflictError(f"gtin: GTIN {body.gtin} already belongs to item {other[0]!r}")
        return upsert(conn, ITEMS, sku, body.model_dump())


def put_profile(conn: psycopg.Connection, code: str, body: ProfileIn) -> tuple[Row, bool]:
    with conn.transaction():
        return upsert(conn, PROFILES, code, body.model_dump())


def put_geofence(conn: psycopg.Connection, code: str, body: CircleIn | PolygonIn) -> tuple[Row, bool]:
    # A replace may switch the shape: the other shape's columns are cleared.
    if isinstance(body, CircleIn):
        values: dict[str, object] = {"type": "circle", "lat": body.lat, "lon": body.lon,
                                     "radius_m": body.radius_m, "coordinates": None}
    else:
        values = {"type": "polygon", "lat": None, "lon": None, "radius_m": None,
                  "coordinates": [list(point) for point in body.coordinates]}
    with conn.transaction():
        return upsert(conn, GEOFENCES, code, values)
