"""A shipment's cold-chain readings and excursions as EPCIS 2.0 sensor data (``sensorElementList``).

The rule (event ids are content hashes, so an exported event must never change):

- One ObjectEvent per delivered shipment that had a sensor on board, bizStep ``sensor_reporting`` (CBV 2.0: "reporting
  sensor data"), at the delivery's event time, at the customer, for the shipment's goods, with
  the shipment's ``desadv``. It is separate from the delivery movements, which are exported at
  once: a delivery must not wait for the sensors.
- Its window is the trip, loading to delivery in event time. One sensorElement per sensor riding
  on the vehicle: min/max/mean temperature (``Temperature``, CEL) and relative humidity
  (``RelativeHumidity``, P1), with startTime/endTime of its readings and its deviceID; one more
  per excursion (alarm) with ``exception: ALARM_CONDITION`` and the peak value.
- It is published only once the window is CLOSED: the shipment is delivered, its delivery was
  recorded at least ``grace`` ago, and no reading of the window was received in the last
  ``grace`` (buffered sensors flush after the truck is back in coverage). Closing is judged in
  receive time, the only clock that says when late data can still come.
- Published events are stored as exported (api/store/epcis.py). If the event computed now differs
  from the last published one (a reading arrived after closure, the delivery time moved), and
  the window is closed again, a corrective event is published and the previous one is exported
  again with an ``errorDeclaration`` (reason ``incorrect_data``, ``correctiveEventIDs``) naming
  it. An exported event is never changed in place, so its hash never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Final
from urllib.parse import quote

from core.epcis import USER_VOCABULARY, digital_link, location_id
from core.epcis_hash import event_hash

DEFAULT_GRACE: Final = timedelta(minutes=15)
_TEMPERATURE_ALARMS: Final = frozenset({"temperature_high", "temperature_low", "temperature_cumulative"})
_HUMIDITY_ALARMS: Final = frozenset({"humidity_high", "humidity_low"})


@dataclass(frozen=True, slots=True)
class ShipmentLine:
    sku: str
    gtin: str | None
    qty: Decimal


@dataclass(frozen=True, slots=True)
class DeliveredShipment:
    ref: str
    customer: str
    lines: tuple[ShipmentLine, ...]
    loaded_at: datetime         # event time of loading: the window opens
    delivered_at: datetime      # event time of delivery: the window closes
    delivery_recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Reading:
    device_id: str
    ts: datetime
    received_at: datetime
    temp_c: float | None
    rh_pct: float | None


@dataclass(frozen=True, slots=True)
class Excursion:
    device_id: str | None
    type: str                   # the alarm type, e.g. temperature_high
    started_at: datetime
    ended_at: datetime | None
    peak: float | None


@dataclass(frozen=True, slots=True)
class Published:
    seq: int
    event_id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Publication:
    """What to store and export now: the new event, and the previous one declared in error."""

    seq: int
    event: dict[str, Any]
    declared: dict[str, Any] | None


def window_closed(shipment: DeliveredShipment, readings: Sequence[Reading], now: datetime,
                  grace: timedelta = DEFAULT_GRACE) -> bool:
    trip = (r for r in readings if shipment.loaded_at <= r.ts <= shipment.delivered_at)
    newest = max((r.received_at for r in trip), default=shipment.delivery_recorded_at)
    return now >= max(newest, shipment.delivery_recorded_at) + grace


def _ts(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _decimal(value: float) -> float | int:
    rounded = round(value, 2)
    return int(rounded) if rounded == int(rounded) else rounded


def _summary(kind: str, uom: str, values: list[float]) -> dict[str, Any]:
    return {"type": kind, "minValue": _decimal(min(values)), "maxValue": _decimal(max(values)),
            "meanValue": _decimal(sum(values) / len(values)), "uom": uom}


def device_uri(device_id: str) -> str:
    return f"{USER_VOCABULARY}device:{quote(device_id, safe='')}"


def sensor_elements(readings: Sequence[Reading], excursions: Sequence[Excursion],
                    window_end: datetime) -> list[dict[str, Any]]:
    elements: list[dict[str, Any]] = []
    for device in sorted({r.device_id for r in readings}):
        own = sorted((r for r in readings if r.device_id == device), key=lambda r: r.ts)
        reports = []
        temps = [r.temp_c for r in own if r.temp_c is not None]
        hums = [r.rh_pct for r in own if r.rh_pct is not None]
        if temps:
            reports.append(_summary("Temperature", "CEL", temps))
        if hums:
            reports.append(_summary("RelativeHumidity", "P1", hums))
        if reports:
            elements.append({"sensorMetadata": {"startTime": _ts(own[0].ts), "endTime": _ts(own[-1].ts),
                                                "deviceID": device_uri(device)},
                             "sensorReport": reports})
    for x in sorted(excursions, key=lambda x: (x.started_at, x.type, x.device_id or "")):
        if x.type in _TEMPERATURE_ALARMS:
            kind, uom = "Temperature", "CEL"
        elif x.type in _HUMIDITY_ALARMS:
            kind, uom = "RelativeHumidity", "P1"
        else:
            continue
        report: dict[str, Any] = {"type": kind, "exception": "ALARM_CONDITION"}
        if x.peak is not None:
            report["minValue" if x.type.endswith("_low") else "maxValue"] = _decimal(x.peak)
        report["uom"] = uom
        metadata: dict[str, Any] = {"startTime": _ts(x.started_at), "endTime": _ts(min(x.ended_at or window_end,
                                                                                        window_end))}
        if x.device_id:
            metadata["deviceID"] = device_uri(x.device_id)
        elements.append({"sensorMetadata": metadata, "sensorReport": [report]})
    return elements


def sensor_event(shipment: DeliveredShipment, readings: Sequence[Reading], excursions: Sequence[Excursion],
                 location_base: str, recorded_at: datetime) -> dict[str, Any]:
    """The shipment's sensor_reporting ObjectEvent over its trip window (readings outside it are ignored)."""
    start, end = shipment.loaded_at, shipment.delivered_at
    in_window = [r for r in readings if start <= r.ts <= end]
    trip = [x for x in excursions if x.started_at <= end and (x.ended_at is None or x.ended_at >= start)]
    quantities = [{"epcClass": digital_link(line.gtin) if line.gtin else f"{USER_VOCABULARY}sku:"
                   f"{quote(line.sku, safe='')}",
                   "quantity": int(line.qty) if line.qty == line.qty.to_integral_value() else float(line.qty)}
                  for line in shipment.lines]
    customer = location_id(location_base, shipment.customer)
    event: dict[str, Any] = {
        "type": "ObjectEvent",
        "eventTime": _ts(end),
        "eventTimeZoneOffset": "+00:00",
        "recordTime": _ts(recorded_at),
        "action": "OBSERVE",
        "bizStep": "sensor_reporting",
        "readPoint": {"id": customer},
        "bizLocation": {"id": customer},
        "bizTransactionList": [{"type": "desadv", "bizTransaction": f"{USER_VOCABULARY}ref:"
                                f"{quote(shipment.ref, safe='')}"}],
    }
    if quantities:
        event["quantityList"] = quantities
    elements = sensor_elements(in_window, trip, end)
    if elements:
        event["sensorElementList"] = elements
    return {"eventID": event_hash(event), **event}


def publication(shipment: DeliveredShipment, readings: Sequence[Reading], excursions: Sequence[Excursion],
                published: Sequence[Published], location_base: str, now: datetime,
                grace: timedelta = DEFAULT_GRACE) -> Publication | None:
    """What to publish now for one delivered shipment, or None (window open, or nothing changed)."""
    if not window_closed(shipment, readings, now, grace):
        return None
    current = sensor_event(shipment, readings, excursions, location_base, now)
    last = max(published, key=lambda p: p.seq, default=None)
    if last is None:
        # No sensor rode on the trip: nothing to report (a correction may still come, see above).
        return Publication(0, current, None) if "sensorElementList" in current else None
    if last.event_id == current["eventID"]:
        return None
    # Re-exported now, so recorded now; the hash ignores recordTime and errorDeclaration: same id.
    declared = {**last.event, "recordTime": _ts(now),
                "errorDeclaration": {"declarationTime": _ts(now), "reason": "incorrect_data",
                                     "correctiveEventIDs": [current["eventID"]]}}
    return Publication(last.seq + 1, current, declared)
