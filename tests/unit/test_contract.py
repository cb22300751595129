from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.contract import (
    EnvReading,
    Position,
    Reason,
    Rejection,
    Rfid,
    Scan,
    Status,
    decode_payload,
    parse_topic,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
GOOD_RMC = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A"
GOOD_GGA = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"


def decode(value: object, kind: str = "env"):
    return decode_payload(value, "dev-1", kind, NOW)  # type: ignore[arg-type]


def one_rejection(value: object, kind: str = "env") -> Rejection:
    result = decode(value, kind)
    assert result.records == ()
    assert len(result.rejections) == 1
    return result.rejections[0]


class TestTopic:
    def test_valid(self) -> None:
        assert parse_topic("cargotrace/v1/dev/gate-7/rfid", "cargotrace/v1") == ("gate-7", "rfid")

    def test_custom_prefix(self) -> None:
        assert parse_topic("acme/x/dev/t1/position", "acme/x") == ("t1", "position")

    @pytest.mark.parametrize("topic", [
        "cargotrace/v1/dev/gate-7/weather", "cargotrace/v1/dev/gate-7", "other/v1/dev/a/scan",
        "cargotrace/v1/dev/a/b/scan", "cargotrace/v1/dev/-bad/scan",
    ])
    def test_invalid(self, topic: str) -> None:
        result = parse_topic(topic, "cargotrace/v1")
        assert isinstance(result, Rejection)
        assert result.reason == Reason.INVALID_TOPIC


class TestTimestamps:
    def test_rfc3339_with_offset_is_normalised(self) -> None:
        (rec,) = decode({"msg_id": "a", "ts": "2026-11-24T13:00:00+01:00", "temp_c": 4}).records
        assert rec.ts == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
        assert rec.ts_source == "device"

    def test_epoch_milliseconds(self) -> None:
        ms = int(NOW.timestamp() * 1000) - 1500
        (rec,) = decode({"msg_id": "a", "ts": ms, "temp_c": 4}).records
        assert rec.ts == NOW - timedelta(milliseconds=1500)

    def test_missing_ts_on_scan_is_receive_time_and_says_so(self) -> None:
        (rec,) = decode({"msg_id": "a", "code": "5901234123457"}, "scan").records
        assert rec.ts == NOW and rec.ts_source == "server" and rec.received_at == NOW

    @pytest.mark.parametrize("kind,body", [
        ("env", {"temp_c": 1}), ("rfid", {"reads": [{"epc": "30" * 12, "antenna": 1, "rssi": -50}]}),
        ("position", {"lat": 1, "lon": 2}),
    ])
    def test_ts_required_for_telemetry(self, kind: str, body: dict[str, object]) -> None:
        rej = one_rejection({"msg_id": "a", **body}, kind)
        assert rej.reason == Reason.MISSING_FIELD and "'ts'" in rej.detail

    def test_future_beyond_skew_rejected(self) -> None:
        future = (NOW + timedelta(minutes=5, seconds=1)).isoformat()
        assert one_rejection({"msg_id": "a", "ts": future, "temp_c": 1}).reason == Reason.TS_IN_FUTURE

    def test_future_within_skew_accepted(self) -> None:
        near = (NOW + timedelta(minutes=4, seconds=59)).isoformat()
        assert len(decode({"msg_id": "a", "ts": near, "temp_c": 1}).records) == 1

    @pytest.mark.parametrize("ts", ["2026-11-24T12:00:00", "2026-11-24", "yesterday", True, 1.5, 12, [1]])
    def test_malformed(self, ts: object) -> None:
        assert one_rejection({"msg_id": "a", "ts": ts, "temp_c": 1}).reason == Reason.INVALID_FIELD


class TestKinds:
    def test_scan_fields(self) -> None:
        code = "]C10109506000134352" "10ABC123\x1d17261231"
        (rec,) = decode({"msg_id": "s1", "code": code, "mode": "receive", "qty": 12, "location": "DOCK-1",
                         "ref": "PO-77"}, "scan").records
        assert isinstance(rec, Scan)
        assert (rec.code, rec.mode, rec.qty, rec.location, rec.ref) == (code, "receive", 12.0, "DOCK-1", "PO-77")

    def test_scan_unknown_mode(self) -> None:
        rej = one_rejection({"msg_id": "s1", "code": "x", "mode": "teleport"}, "scan")
        assert rej.reason == Reason.INVALID_FIELD and "mode" in rej.detail

    def test_scan_zero_qty_only_for_count(self) -> None:
        assert one_rejection({"msg_id": "s", "code": "x", "qty": 0, "mode": "pick"}, "scan").reason == \
            Reason.INVALID_FIELD
        assert len(decode({"msg_id": "s", "code": "x", "qty": 0, "mode": "count"}, "scan").records) == 1

    def test_rfid_reads_default_to_message_ts(self) -> None:
        reads = [{"epc": "3074257bf7194e4000001a85", "antenna": 1, "rssi": -51.5},
                 {"epc": "3074257BF7194E4000001A85", "antenna": 2, "rssi": -60, "ts": "2026-11-24T11:59:59Z"}]
        (rec,) = decode({"msg_id": "r", "ts": NOW.isoformat(), "reads": reads}, "rfid").records
        assert isinstance(rec, Rfid)
        assert [r.epc for r in rec.reads] == ["3074257BF7194E4000001A85"] * 2
        assert rec.reads[0].ts == NOW and rec.reads[1].ts == NOW - timedelta(seconds=1)

    @pytest.mark.parametrize("reads", [[], "x", [{"epc": "zz" * 12, "antenna": 1, "rssi": -50}],
                                       [{"epc": "30" * 11, "antenna": 1, "rssi": -50}],
                                       [{"epc": "30" * 12, "rssi": -50}]])
    def test_rfid_bad_reads(self, reads: object) -> None:
        rej = one_rejection({"msg_id": "r", "ts": NOW.isoformat(), "reads": reads}, "rfid")
        assert rej.reason in (Reason.INVALID_FIELD, Reason.MISSING_FIELD)

    def test_position_json(self) -> None:
        (rec,) = decode({"msg_id": "p", "ts": NOW.isoformat(), "lat": 48.1, "lon": 11.5, "speed_kmh": 80},
                        "position").records
        assert isinstance(rec, Position)
        assert (rec.lat, rec.lon, rec.speed_kmh, rec.source, rec.fix_valid) == (48.1, 11.5, 80.0, "json", True)

    def test_position_nmea_pair(self) -> None:
        (rec,) = decode({"msg_id": "p", "ts": NOW.isoformat(), "nmea": [GOOD_RMC, GOOD_GGA]}, "position").records
        assert isinstance(rec, Position)
        assert rec.source == "nmea" and rec.fix_valid
        assert rec.lat == pytest.approx(48.1173) and rec.lon == pytest.approx(11.516667)
        assert rec.speed_kmh == pytest.approx(22.4 * 1.852) and rec.alt_m == pytest.approx(545.4)

    def test_position_nmea_bad_checksum(self) -> None:
        rej = one_rejection({"msg_id": "p", "ts": NOW.isoformat(), "nmea": GOOD_RMC[:-1] + "B"}, "position")
        assert rej.reason == Reason.INVALID_FIELD and "checksum" in rej.detail

    def test_position_out_of_range(self) -> None:
        rej = one_rejection({"msg_id": "p", "ts": NOW.isoformat(), "lat": 91, "lon": 0}, "position")
        assert rej.reason == Reason.INVALID_FIELD and "'lat'" in rej.detail

    def test_env_needs_a_reading(self) -> None:
        assert one_rejection({"msg_id": "e", "ts": NOW.isoformat(), "probe": "a"}).reason == Reason.MISSING_FIELD

    def test_env_humidity_only(self) -> None:
        (rec,) = decode({"msg_id": "e", "ts": NOW.isoformat(), "rh_pct": 55}).records
        assert isinstance(rec, EnvReading) and rec.temp_c is None and rec.rh_pct == 55

    def test_status_all_optional(self) -> None:
        (rec,) = decode({"msg_id": "h"}, "status").records
        assert isinstance(rec, Status) and rec.battery_pct is None and rec.ts_source == "server"

    @pytest.mark.parametrize("body", [{"temp_c": "4"}, {"temp_c": True}, {"temp_c": None, "rh_pct": 101}])
    def test_wrong_types(self, body: dict[str, object]) -> None:
        rej = one_rejection({"msg_id": "e", "ts": NOW.isoformat(), **body})
        assert rej.reason in (Reason.INVALID_FIELD, Reason.MISSING_FIELD)

    @pytest.mark.parametrize("msg_id", [None, "", "x" * 65, 7, "a\x00b"])
    def test_msg_id(self, msg_id: object) -> None:
        rej = one_rejection({"msg_id": msg_id, "ts": NOW.isoformat(), "temp_c": 1})
        assert rej.reason in (Reason.INVALID_FIELD, Reason.MISSING_FIELD)


class TestArrays:
    def test_valid_objects_survive_invalid_neighbours(self) -> None:
        payload = [{"msg_id": "1", "ts": NOW.isoformat(), "temp_c": 1}, {"msg_id": "2"}, "junk",
                   {"msg_id": "3", "ts": NOW.isoformat(), "temp_c": 3}]
        result = decode(payload)
        assert [r.msg_id for r in result.records] == ["1", "3"]
        assert [(r.index, r.reason) for r in result.rejections] == [
            (1, Reason.MISSING_FIELD), (2, Reason.NOT_AN_OBJECT)]
        assert result.rejections[1].obj == "junk"

    def test_empty_array(self) -> None:
        assert one_rejection([]).reason == Reason.EMPTY_ARRAY

    def test_identical_repeat_is_one_message(self) -> None:
        obj = {"msg_id": "1", "ts": NOW.isoformat(), "temp_c": 1}
        result = decode([obj, dict(obj)])
        assert len(result.records) == 1 and result.rejections == ()

    def test_conflicting_repeat_is_rejected(self) -> None:
        result = decode([{"msg_id": "1", "ts": NOW.isoformat(), "temp_c": 1},
                         {"msg_id": "1", "ts": NOW.isoformat(), "temp_c": 9}])
        assert len(result.records) == 1 and result.records[0].temp_c == 1  # type: ignore[union-attr]
        assert result.rejections[0].reason == Reason.DUPLICATE_IN_PAYLOAD

    def test_top_level_scalar(self) -> None:
        assert one_rejection(42).reason == Reason.NOT_AN_OBJECT


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(value=json_values, kind=st.sampled_from(["scan", "rfid", "position", "env", "status"]))
def test_any_json_is_accepted_or_rejected_never_raises(value: object, kind: str) -> None:
    result = decode(value, kind)
    n_items = len(value) if isinstance(value, list) and value else 1
    # Every object is accounted for exactly once: a record, a rejection, or an identical repeat.
    assert len(result.records) + len(result.rejections) <= n_items
    assert result.records or result.rejections
    for rejection in result.rejections:
        assert rejection.reason and rejection.detail


@given(temp=st.floats(-50, 80), ms=st.integers(946_684_800_000, int(NOW.timestamp() * 1000)))
def test_valid_env_roundtrip(temp: float, ms: int) -> None:
    (rec,) = decode({"msg_id": "m", "ts": ms, "temp_c": temp}).records
    assert isinstance(rec, EnvReading)
    assert rec.temp_c == temp
    assert rec.ts == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
