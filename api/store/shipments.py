"""Shipments: create-or-replace of the planned record with reference checks.

``status`` belongs to the rules core (scans, geofences) and is never set by PUT; the public
tracking token is generated once, at creation, and kept on every replace.
"""

from __future__ import annotations

import secrets

import psycopg
from psycopg.rows import dict_row

from api.schemas.shipments import ShipmentIn
from api.store import references
from api.store.records import Row, Table, fetch, upsert

SHIPMENTS = Table("shipments", "ref", ("origin", "destination", "customer", "vehicle", "promised_at", "profile",
                                       "lines"), json_columns=frozenset({"lines"}))


def put_shipment(conn: psycopg.Connection, ref: str, body: ShipmentIn) -> tuple[Row, bool]:
    with conn.transaction():
        references.require_location(conn, body.origin, "origin")
        references.require_geofence(conn, body.destination, "destination")
        references.require_location(conn, body.customer, "customer", of_type="customer")
        references.require_location(conn, body.vehicle, "vehicle", of_type="vehicle")
        if body.profile is not None:
            references.require_profile(conn, body.profile)
        references.require_items(conn, (line.sku for line in body.lines))
        values = body.model_dump(mode="python")
        return upsert(conn, SHIPMENTS, ref, values, insert_only={"public_token": secrets.token_urlsafe(24)})


def get_shipment(conn: psycopg.Connection, ref: str) -> Row | None:
    return fetch(conn, SHIPMENTS, ref)


def list_shipments(conn: psycopg.Connection, after: str | None, limit: int, status: str | None) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM shipments WHERE (%(after)s::text IS NULL OR ref > %(after)s) "
            "AND (%(status)s::text IS NULL OR status = %(status)s) ORDER BY ref LIMIT %(limit)s",
            {"after": after, "status": status, "limit": limit}).fetchall()
