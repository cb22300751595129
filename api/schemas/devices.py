"""Device bodies: registry attributes, liveness, and broker credentials (shown once)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from api.schemas.common import Code, In, Out, UtcDatetime

DeviceKind = Literal["scanner", "rfid_gate", "gps_tracker", "env_sensor"]
ScanMode = Literal["receive", "putaway", "pick", "ship", "deliver", "count", "return", "move"]
Antenna = Annotated[int, Field(ge=0, le=32767)]
# Caps on lists in request bodies, so one request cannot make the server build a huge object.
MAX_ANTENNAS = 64


class GateZoneIn(In):
    antennas: list[Antenna] = Field(min_length=1, max_length=MAX_ANTENNAS,
                                    description=f"at most {MAX_ANTENNAS} antenna ports")
    location: Code


class GateIn(In):
    outer: GateZoneIn = Field(description="antennas at the door and the location outside it")
    inner: GateZoneIn = Field(description="antennas a few metres inside and the location inside")
    rssi_floor_dbm: float | None = Field(None, description="extension: reads weaker than this are ignored")
    absent_after_s: float | None = Field(None, gt=0, description="extension: silence that ends a passage")

    @model_validator(mode="after")
    def _zones_apart(self) -> GateIn:
        shared = sorted(set(self.outer.antennas) & set(self.inner.antennas))
        if shared:
            raise ValueError(f"gate antennas {shared} are in both outer and inner; the zones must be disjoint")
        if self.outer.location == self.inner.location:
            raise ValueError("gate outer and inner locations must differ")
        return self


class DeviceIn(In):
    kind: DeviceKind
    site: Code | None = None
    location: Code | None = Field(None, description="where a scanner or fixed sensor sits")
    mode: ScanMode | None = Field(None, description="a scanner's default scan mode")
    vehicle: Code | None = Field(None, description="location of type vehicle a tracker or sensor rides on")
    profile: Code | None = Field(None, description="environmental profile of a fixed sensor")
    gate: GateIn | None = Field(None, description="antenna zones of an rfid_gate")

    @model_validator(mode="after")
    def _kind_specific(self) -> DeviceIn:
        if self.kind == "rfid_gate" and self.gate is None:
            raise ValueError("an rfid_gate needs `gate` with its outer and inner antenna zones")
        if self.kind != "rfid_gate" and self.gate is not None:
            raise ValueError(f"`gate` is only for rfid_gate devices, not {self.kind}")
        if self.kind != "scanner" and self.mode is not None:
            raise ValueError(f"`mode` is only for scanners, not {self.kind}")
        return self


class DeviceOut(Out):
    device_id: str
    kind: str
    site: str | None
    location: str | None
    mode: str | None
    vehicle: str | None
    profile: str | None
    gate: dict[str, Any] | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    last_seen: UtcDatetime | None = Field(description="receive time of the newest message")
    online: bool = Field(description="a message arrived within the offline threshold")
    battery_pct: float | None = Field(description="latest reported battery level (by device time)")


class CredentialsOut(Out):
    """Broker credentials; the password is shown only in this response."""

    device_id: str
    mqtt_username: str
    mqtt_password: str
    mqtt_host: str
    mqtt_port: int
    topic_prefix: str


class DeviceCreatedOut(DeviceOut):
    """The answer to the PUT that creates a device: the device plus its broker credentials, once."""

    mqtt_username: str
    mqtt_password: str
    mqtt_host: str
    mqtt_port: int
    topic_prefix: str
