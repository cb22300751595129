"""Checks that the codes a body refers to exist (and are of the right type).

Done explicitly before writing, so the client learns which field is wrong instead of getting a
foreign-key error; the constraints stay as the last line of defence.
"""

from __future__ import annotations

from collections.abc import Iterable

import psycopg

from api.errors import InvalidReferenceError


def _exists(conn: psycopg.Connection, query: str, code: str) -> bool:
    return conn.execute(query, (code,)).fetchone() is not None


def require_site(conn: psycopg.Connection, code: str, field: str = "site") -> None:
    if not _exists(conn, "SELECT 1 FROM sites WHERE code = %s", code):
        raise InvalidReferenceError(f"{field}: site {code!r} does not exist; create it with PUT /sites/{code}")


def require_geofence(conn: psycopg.Connection, code: str, field: str = "geofence") -> None:
    if not _exists(conn, "SELECT 1 FROM geofences WHERE code = %s", code):
        raise InvalidReferenceError(f"{field}: geofence {code!r} does not exist; create it with PUT /geofences/{code}")


def require_profile(conn: psycopg.Connection, code: str, field: str = "profile") -> None:
    if not _exists(conn, "SELECT 1 FROM profiles WHERE code = %s", code):
        raise InvalidReferenceError(f"{field}: profile {code!r} does not exist; create it with PUT /profiles/{code}")


def require_location(conn: psycopg.Connection, code: str, field: str, of_type: str | None = None,
                     in_site: str | None = None) -> None:
    row = conn.execute("SELECT type, site FROM locations WHERE code = %s", (code,)).fetchone()
    if row is None:
        raise InvalidReferenceError(f"{field}: location {code!r} does not exist; create it with PUT /locations/{code}")
    location_type, site = row
    if of_type is not None and location_type != of_type:
        raise InvalidReferenceError(f"{field}: location {code!r} is of type {location_type!r}; "
                               f"{field} must be a location of type {of_type!r}")
    if in_site is not None and site != in_site:
        raise InvalidReferenceError(f"{field}: location {code!r} belongs to site {site!r}, not {in_site!r}")


def require_items(conn: psycopg.Connection, skus: Iterable[str], field: str = "lines") -> None:
    wanted = sorted(set(skus))
    if not wanted:
        return
    found = {r[0] for r in conn.execute("SELECT sku FROM items WHERE sku = ANY(%s)", (wanted,))}
    missing = [sku for sku in wanted if sku not in found]
    if missing:
        raise InvalidReferenceError(f"{field}: unknown item sku(s) {', '.join(map(repr, missing))}; "
                               "create them with PUT /items/{sku}")
