"""A shipment's cold-chain data as EPCIS 2.0 sensor data, and the rule that keeps exported ids fixed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from core.epcis import document
from core.epcis_hash import event_hash
from core.epcis_sensors import (
    DeliveredShipment,
    Excursion,
    Published,
    Reading,
    ShipmentLine,
    publication,
    sensor_event,
    window_closed,
)
from tests.unit.test_epcis import schema_errors

BASE = "urn:cargotrace:location:"
LOADED = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
DELIVERED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RECORDED = DELIVERED + timedelta(seconds=5)
GRACE = timedelta(minutes=15)
SHIPMENT = DeliveredShipment("SH/1", "CUST-1", (ShipmentLine("SKU-A", "09506000134352", Decimal(24)),
                                                ShipmentLine("SKU-X", None, Decimal("1.5"))),
                             LOADED, DELIVERED, RECORDED)


def reading(minutes: int, temp: float | None, rh: float | None = None, device: str = "ENV-1",
            received_late: timedelta = timedelta(0)) -> Reading:
    ts = LOADED + timedelta(minutes=minutes)
    return Reading(device, ts, max(ts, RECORDED - timedelta(hours=1)) + received_late, temp, rh)


READINGS = [reading(0, 4.0, 50.0), reading(60, 9.5, 55.0), reading(120, 5.0, 52.0), reading(30, 5.5, device="ENV-2"),
            reading(-30, 20.0), reading(300, 20.0)]  # the last two are outside the trip: ignored
EXCURSION = Excursion("ENV-1", "temperature_high", LOADED + timedelta(minutes=50), LOADED + timedelta(minutes=70),
                      9.5)


def test_sensor_event_summarises_each_sensor_and_each_excursion_and_is_schema_valid() -> None:
    event = sensor_event(SHIPMENT, READINGS, [EXCURSION], BASE, RECORDED + GRACE)
    assert event["bizStep"] == "sensor_reporting" and event["action"] == "OBSERVE"
    assert event["eventTime"] == "2026-03-01T12:00:00.000Z"
    assert event["bizLocation"] == {"id": BASE + "CUST-1"}
    assert event["bizTransactionList"] == [{"type": "desadv", "bizTransaction": "urn:cargotrace:ref:SH%2F1"}]
    assert event["quantityList"] == [{"epcClass": "https://id.gs1.org/01/09506000134352", "quantity": 24},
                                     {"epcClass": "urn:cargotrace:sku:SKU-X", "quantity": 1.5}]
    env1, env2, alarm = event["sensorElementList"]
    assert env1["sensorMetadata"] == {"startTime": "2026-03-01T08:00:00.000Z", "endTime": "2026-03-01T10:00:00.000Z",
                                      "deviceID": "urn:cargotrace:device:ENV-1"}
    assert env1["sensorReport"] == [
        {"type": "Temperature", "minValue": 4, "maxValue": 9.5, "meanValue": 6.17, "uom": "CEL"},
        {"type": "RelativeHumidity", "minValue": 50, "maxValue": 55, "meanValue": 52.33, "uom": "P1"}]
    assert env2["sensorReport"] == [{"type": "Temperature", "minValue": 5.5, "maxValue": 5.5, "meanValue": 5.5,
                                     "uom": "CEL"}]
    assert alarm == {"sensorMetadata": {"startTime": "2026-03-01T08:50:00.000Z", "endTime": "2026-03-01T09:10:00.000Z",
                                        "deviceID": "urn:cargotrace:device:ENV-1"},
                     "sensorReport": [{"type": "Temperature", "exception": "ALARM_CONDITION", "maxValue": 9.5,
                                       "uom": "CEL"}]}
    assert event["eventID"] == event_hash(event)
    assert schema_errors(document([event], RECORDED)) == []


def test_the_window_closes_only_after_the_grace_since_delivery_and_since_the_newest_reading() -> None:
    assert not window_closed(SHIPMENT, READINGS, RECORDED + GRACE - timedelta(seconds=1), GRACE)
    assert window_closed(SHIPMENT, READINGS, RECORDED + GRACE, GRACE)
    flushed = [*READINGS, reading(200, 5.0, received_late=timedelta(hours=2))]
    newest = max(r.received_at for r in flushed)
    assert not window_closed(SHIPMENT, flushed, newest + GRACE - timedelta(seconds=1), GRACE)
    assert window_closed(SHIPMENT, flushed, newest + GRACE, GRACE)


def test_nothing_is_published_while_the_window_is_open() -> None:
    assert publication(SHIPMENT, READINGS, [], [], BASE, RECORDED + timedelta(minutes=1), GRACE) is None


def test_a_published_event_never_changes_a_late_reading_gives_a_corrective_event() -> None:
    first = publication(SHIPMENT, READINGS, [EXCURSION], [], BASE, RECORDED + GRACE, GRACE)
    assert first is not None and first.seq == 0 and first.declared is None
    exported = Published(0, first.event["eventID"], first.event)
    # Polled again later with the same data: nothing new, and the stored event keeps its id.
    assert publication(SHIPMENT, READINGS, [EXCURSION], [exported], BASE, RECORDED + 10 * GRACE, GRACE) is None
    # A buffered reading of the trip arrives after closure.
    late = reading(180, 12.0, received_late=timedelta(hours=5))
    later = [*READINGS, late]
    assert publication(SHIPMENT, later, [EXCURSION], [exported], BASE, late.received_at + GRACE / 2, GRACE) is None
    second = publication(SHIPMENT, later, [EXCURSION], [exported], BASE, late.received_at + GRACE, GRACE)
    assert second is not None and second.seq == 1
    assert second.event["eventID"] != exported.event_id
    assert second.event["sensorElementList"][0]["sensorReport"][0]["maxValue"] == 12
    declared = second.declared
    assert declared is not None and declared["eventID"] == exported.event_id
    assert declared["errorDeclaration"]["correctiveEventIDs"] == [second.event["eventID"]]
    assert declared["errorDeclaration"]["reason"] == "incorrect_data"
    # The first event, exported again with its declaration, still hashes to its published id.
    assert event_hash(declared) == exported.event_id == event_hash(first.event)
    assert schema_errors(document([declared, second.event], RECORDED)) == []


def test_a_moved_delivery_time_also_gives_a_corrective_event() -> None:
    first = publication(SHIPMENT, READINGS, [], [], BASE, RECORDED + GRACE, GRACE)
    assert first is not None
    moved = DeliveredShipment(SHIPMENT.ref, SHIPMENT.customer, SHIPMENT.lines, LOADED,
                              DELIVERED - timedelta(minutes=10), RECORDED)
    second = publication(moved, READINGS, [], [Published(0, first.event["eventID"], first.event)], BASE,
                         RECORDED + 2 * GRACE, GRACE)
    assert second is not None and second.seq == 1 and second.event["eventTime"] == "2026-03-01T11:50:00.000Z"


def test_a_trip_without_sensor_data_publishes_nothing_and_one_without_lines_is_valid() -> None:
    assert publication(SHIPMENT, [], [], [], BASE, RECORDED + GRACE, GRACE) is None
    bare = DeliveredShipment("SH-2", "CUST-1", (), LOADED, DELIVERED, RECORDED)
    first = publication(bare, READINGS, [], [], BASE, RECORDED + GRACE, GRACE)
    assert first is not None and "quantityList" not in first.event and "epcList" not in first.event
    assert schema_errors(document([first.event], RECORDED)) == []
