"""Bodies of sites, locations, items, environmental profiles and geofences (CONTRACT 2.2)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from api.schemas.common import Code, In, Number, Out, UtcDatetime
from core.gs1 import ScanCodeError, normalise_gtin

# repair (a repair bench) and consumed (where repair parts go): after-sales, migration 0017.
LOCATION_TYPES = ("internal", "dock", "staging", "vehicle", "supplier", "customer", "returns", "inventory_loss",
                  "repair", "consumed")
LocationType = Literal["internal", "dock", "staging", "vehicle", "supplier", "customer", "returns", "inventory_loss",
                       "repair", "consumed"]

Name = Annotated[str, Field(min_length=1, max_length=200)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Percent = Annotated[float, Field(ge=0, le=100)]


# --- sites -------------------------------------------------------------------------------------

class SiteIn(In):
    name: Name
    tz: str = Field("UTC", description="IANA time zone, e.g. Europe/Berlin")
    geofence: Code | None = Field(None, description="code of the geofence around the site's yard")

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from None
        return value


class SiteOut(Out):
    code: str
    name: str
    tz: str
    geofence: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


# --- locations ---------------------------------------------------------------------------------

class LocationIn(In):
    site: Code
    type: LocationType
    name: Name | None = None


class LocationOut(Out):
    code: str
    site: str
    type: str
    name: str | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


# --- items -------------------------------------------------------------------------------------

class ItemIn(In):
    name: Name
    gtin: str | None = Field(None, description="GTIN-8/12/13/14; stored as GTIN-14 after the check digit is verified")
    profile: Code | None = None
    # Replenishment (CONTRACT 3.3); a site that differs overrides them (PUT /items/{sku}/sites/{site}).
    reorder_point: Decimal | None = Field(None, ge=0, max_digits=18, decimal_places=6)
    reorder_qty: Decimal | None = Field(None, gt=0, max_digits=18, decimal_places=6)
    lead_time_days: Decimal | None = Field(None, ge=0, max_digits=10, decimal_places=3)
    default_location: Code | None = Field(None, description="extension: the bin received goods are put away to")
    warranty_months: int | None = Field(None, ge=0, le=1200, description="CONTRACT 3.3: repairs' warranty from "
                                                                          "the serial's delivery")

    @field_validator("gtin")
    @classmethod
    def _normalised_gtin(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalise_gtin(value.strip())
        except ScanCodeError as exc:
            raise ValueError(exc.message) from None


class ItemOut(Out):
    sku: str
    name: str
    gtin: str | None
    profile: str | None
    reorder_point: Number | None = None
    reorder_qty: Number | None = None
    lead_time_days: Number | None = None
    default_location: str | None = None
    warranty_months: int | None = None
    created_at: UtcDatetime
    updated_at: UtcDatetime


# --- environmental profiles --------------------------------------------------------------------

class ProfileIn(In):
    temp_min_c: float
    temp_max_c: float
    rh_min_pct: Percent | None = None
    rh_max_pct: Percent | None = None
    delay_s: int = Field(300, ge=0, description="seconds continuously out of range before an alarm")
    hysteresis_c: float = Field(0.5, ge=0, description="how far back inside the range before an alarm clears")
    cumulative_s: int | None = Field(None, gt=0, description="seconds out of range in total (either side, not "
                                     "necessarily continuous) before a temperature_cumulative alarm; none by default")

    @model_validator(mode="after")
    def _ranges(self) -> ProfileIn:
        if not self.temp_min_c < self.temp_max_c:
            raise ValueError(f"temp_min_c ({self.temp_min_c}) must be below temp_max_c ({self.temp_max_c})")
        if self.rh_min_pct is not None and self.rh_max_pct is not None and not self.rh_min_pct < self.rh_max_pct:
            raise ValueError(f"rh_min_pct ({self.rh_min_pct}) must be below rh_max_pct ({self.rh_max_pct})")
        return self


class ProfileOut(Out):
    code: str
    temp_min_c: float
    temp_max_c: float
    rh_min_pct: float | None
    rh_max_pct: float | None
    delay_s: int
    hysteresis_c: float
    cumulative_s: int | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


# --- geofences ---------------------------------------------------------------------------------

class CircleIn(In):
    type: Literal["circle"]
    lat: Latitude
    lon: Longitude
    radius_m: float = Field(gt=0)


# A cap on vertices: every position of every vehicle is tested against the polygon.
MAX_POLYGON_VERTICES = 2000


class PolygonIn(In):
    type: Literal["polygon"]
    coordinates: list[tuple[Longitude, Latitude]] = Field(
        max_length=MAX_POLYGON_VERTICES,
        description=f"[[lon, lat], ...] (GeoJSON order), at most {MAX_POLYGON_VERTICES} vertices")

    @field_validator("coordinates")
    @classmethod
    def _enough_points(cls, value: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(set(value)) < 3:
            raise ValueError(f"a polygon needs at least 3 distinct [lon, lat] points, got {len(set(value))}")
        return value


GeofenceIn = Annotated[CircleIn | PolygonIn, Field(discriminator="type")]


class CircleOut(Out):
    code: str
    type: Literal["circle"]
    lat: float
    lon: float
    radius_m: float
    created_at: UtcDatetime
    updated_at: UtcDatetime


class PolygonOut(Out):
    code: str
    type: Literal["polygon"]
    coordinates: list[tuple[float, float]]
    created_at: UtcDatetime
    updated_at: UtcDatetime


GeofenceOut = Annotated[CircleOut | PolygonOut, Field(discriminator="type")]
