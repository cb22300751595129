"""Sites, locations, items, profiles and geofences (CONTRACT 2.2): admin writes, viewer reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Response
from pydantic import TypeAdapter

from api.auth import Admin, Viewer
from api.db import Conn
from api.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, page
from api.routes.common import PUT_RESPONSES, found, set_put_status
from api.schemas.common import CodePath
from api.schemas.master_data import (
    GeofenceIn,
    GeofenceOut,
    ItemIn,
    ItemOut,
    LocationIn,
    LocationOut,
    ProfileIn,
    ProfileOut,
    SiteIn,
    SiteOut,
)
from api.store import master_data as store
from api.store.records import Row, Table, fetch, fetch_page

router = APIRouter(tags=["master data"])
T = TypeVar("T")

_geofence: TypeAdapter[GeofenceOut] = TypeAdapter(GeofenceOut)


def _list(table: Table, conn: Conn, limit: int, cursor: str | None, shape: Callable[[Row], T]) -> Page[T]:
    after = decode_cursor(table.name, cursor, (str,))
    rows = fetch_page(conn, table, None if after is None else str(after[0]), limit + 1)
    return page(table.name, rows, limit, lambda r: (r[table.key],), shape)


def _geofence_out(row: Row) -> GeofenceOut:
    return _geofence.validate_python(row)


# --- sites -------------------------------------------------------------------------------------

@router.put("/sites/{code}", responses=PUT_RESPONSES)
def put_site(code: CodePath, body: SiteIn, conn: Conn, _: Admin, response: Response) -> SiteOut:
    row, created = store.put_site(conn, code, body)
    set_put_status(response, created)
    return SiteOut.model_validate(row)


@router.get("/sites/{code}")
def get_site(code: str, conn: Conn, _: Viewer) -> SiteOut:
    return SiteOut.model_validate(found(fetch(conn, store.SITES, code), "site", code))


@router.get("/sites")
def list_sites(conn: Conn, _: Viewer, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[SiteOut]:
    return _list(store.SITES, conn, limit, cursor, SiteOut.model_validate)


# --- locations ---------------------------------------------------------------------------------

@router.put("/locations/{code}", responses=PUT_RESPONSES)
def put_location(code: CodePath, body: LocationIn, conn: Conn, _: Admin, response: Response) -> LocationOut:
    row, created = store.put_location(conn, code, body)
    set_put_status(response, created)
    return LocationOut.model_validate(row)


@router.get("/locations/{code}")
def get_location(code: str, conn: Conn, _: Viewer) -> LocationOut:
    return LocationOut.model_validate(found(fetch(conn, store.LOCATIONS, code), "location", code))


@router.get("/locations")
def list_locations(conn: Conn, _: Viewer, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[LocationOut]:
    return _list(store.LOCATIONS, conn, limit, cursor, LocationOut.model_validate)


# --- items -------------------------------------------------------------------------------------

@router.put("/items/{sku}", responses=PUT_RESPONSES)
def put_item(sku: CodePath, body: ItemIn, conn: Conn, _: Admin, response: Response) -> ItemOut:
    row, created = store.put_item(conn, sku, body)
    set_put_status(response, created)
    return ItemOut.model_validate(row)


@router.get("/items/{sku}")
def get_item(sku: str, conn: Conn, _: Viewer) -> ItemOut:
    return ItemOut.model_validate(found(fetch(conn, store.ITEMS, sku), "item", sku))


@router.get("/items")
def list_items(conn: Conn, _: Viewer, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[ItemOut]:
    return _list(store.ITEMS, conn, limit, cursor, ItemOut.model_validate)


# --- environmental profiles --------------------------------------------------------------------

@router.put("/profiles/{code}", responses=PUT_RESPONSES)
def put_profile(code: CodePath, body: ProfileIn, conn: Conn, _: Admin, response: Response) -> ProfileOut:
    row, created = store.put_profile(conn, code, body)
    set_put_status(response, created)
    return ProfileOut.model_validate(row)


@router.get("/profiles/{code}")
def get_profile(code: str, conn: Conn, _: Viewer) -> ProfileOut:
    return ProfileOut.model_validate(found(fetch(conn, store.PROFILES, code), "profile", code))


@router.get("/profiles")
def list_profiles(conn: Conn, _: Viewer, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[ProfileOut]:
    return _list(store.PROFILES, conn, limit, cursor, ProfileOut.model_validate)


# --- geofences ---------------------------------------------------------------------------------

@router.put("/geofences/{code}", responses=PUT_RESPONSES)
def put_geofence(code: CodePath, body: GeofenceIn, conn: Conn, _: Admin, response: Response) -> GeofenceOut:
    row, created = store.put_geofence(conn, code, body)
    set_put_status(response, created)
    return _geofence_out(row)


@router.get("/geofences/{code}")
def get_geofence(code: str, conn: Conn, _: Viewer) -> GeofenceOut:
    return _geofence_out(found(fetch(conn, store.GEOFENCES, code), "geofence", code))


@router.get("/geofences")
def list_geofences(conn: Conn, _: Viewer, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Page[GeofenceOut]:
    return _list(store.GEOFENCES, conn, limit, cursor, _geofence_out)
