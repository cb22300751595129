"""``bad-devices``: a known set of broken messages, plus a few good ones and duplicates.

Devices (stable ids, new password each run): ``sim-bad-env`` (env sensor), ``sim-bad-trk`` (GPS
tracker), ``sim-bad-hh`` (scanner at dock 2), ``sim-bad-skew`` (an env sensor whose clock runs an
hour ahead). What each sends, and the dead-letter reason the platform must give it:

| # | device | what | reason |
|---|---|---|---|
| 1 | env | JSON cut off mid-object | ``invalid_json`` |
| 2 | env | ``temp_c`` as a string | ``invalid_field`` |
| 3 | env | array of a good reading and ``rh_pct`` 140 | ``invalid_field`` (the good one is applied) |
| 4 | trk | position without ``ts`` | ``missing_field`` |
| 5 | trk | NMEA sentence with a wrong checksum | ``invalid_field`` |
| 6 | hh | GS1 code whose GTIN has a wrong check digit | ``bad_check_digit`` |
| 7 | hh | GTIN with a right check digit that no item has | ``unknown_gtin`` |
| 8 | skew | two readings an hour in the future | ``ts_in_future`` x 2 |
| 9 | env | a 300 KB array (over the 256 KiB limit) | ``payload_too_large`` |
| 10 | env | ``[]`` | ``empty_array`` |
| 11 | env | ``"hello"`` | ``not_an_object`` |

Good: 5 env readings (one of them published twice: applied once, no dead letter), an array with
an exact repeat of one reading (applied once), 3 positions, 2 heartbeats, one receive scan of 5
yoghurt cases at dock 2 (one movement).

Afterwards the platform shows exactly these 12 dead letters, 7 env readings, 3 positions, one
movement, and nothing else: no alarm.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from simulators.messages import Message, MsgIds, dumps, epoch_ms, rfc3339
from simulators.models.gps import nmea_sentences
from simulators.models.gs1codes import element_strings, wrong_check_digit, yymmdd
from simulators.provision import DeviceDef
from simulators.scenarios import world as w
from simulators.scenarios.base import ScenarioContext, ScenarioPlan, streams_of

NAME = "bad-devices"
SPAN_S = 10 * 60.0
ENV, TRK, HH, SKEW = "sim-bad-env", "sim-bad-trk", "sim-bad-hh", "sim-bad-skew"

EXPECTED_DEAD_LETTERS = {"invalid_json": 1, "invalid_field": 3, "missing_field": 1, "bad_check_digit": 1,
                         "unknown_gtin": 1, "ts_in_future": 2, "payload_too_large": 1, "empty_array": 1,
                         "not_an_object": 1}


def build(ctx: ScenarioContext) -> ScenarioPlan:
    if ctx.clock.span_s < SPAN_S:
        raise ValueError(f"{NAME} needs {SPAN_S / 60:.0f} simulated minutes; raise --speedup or --duration")
    rng = ctx.rng("bad")
    ids = {d: MsgIds(ctx.tag) for d in (ENV, TRK, HH, SKEW)}
    out: list[Message] = []

    def msg(minute: float, device: str, kind: str, payload: Any, label: str) -> None:
        data = payload if isinstance(payload, bytes) else dumps(payload)
        out.append(Message(ctx.at(minute), device, kind, data, label))

    def env(minute: float, temp: Any = None, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"msg_id": ids[ENV].next(), "ts": rfc3339(ctx.at(minute)),
                                "temp_c": round(4 + rng.gauss(0, 0.2), 2) if temp is None else temp}
        body.update(extra)
        return body

    # good traffic
    for i in range(4):
        msg(1 + i, ENV, "env", env(1 + i), "env")
    twice = env(5.5)
    msg(5.5, ENV, "env", twice, "env")
    msg(5.6, ENV, "env", twice, "dup:env")  # QoS 1 redelivery: the same message again
    repeat = env(6)
    msg(6, ENV, "env", [repeat, repeat], "dup:array")  # an exact repeat inside one array
    for i in range(3):
        p = w.DC_PARKING
        msg(2 + i, TRK, "position", {"msg_id": ids[TRK].next(), "ts": epoch_ms(ctx.at(2 + i)),
                                     "lat": round(p.lat + rng.gauss(0, 3e-5), 6),
                                     "lon": round(p.lon + rng.gauss(0, 3e-5), 6)}, "position")
    for device in (ENV, TRK):
        msg(3, device, "status", {"msg_id": ids[device].next(), "battery_pct": 77.0, "fw": "1.0.3"}, "status")
    lot = w.lot(w.YOG, ctx.tag, "B", ctx.clock.sim_start.date())
    good_code = element_strings([("01", w.YOG.gtin), ("17", yymmdd(lot.expiry)), ("10", lot.lot)])
    msg(2, HH, "scan", {"msg_id": ids[HH].next(), "ts": rfc3339(ctx.at(2)), "code": good_code, "mode": "receive",
                        "qty": 5, "location": w.DOCK2}, "scan:receive")

    # bad traffic, one per reason (see the table in the module docstring)
    cut = dumps(env(7))
    msg(7, ENV, "env", cut[:len(cut) // 2], "bad:invalid_json")
    msg(7.2, ENV, "env", env(7.2, temp="cold"), "bad:invalid_field")
    msg(7.4, ENV, "env", [env(7.4), env(7.41, rh_pct=140)], "bad:invalid_field")
    msg(7.6, TRK, "position", {"msg_id": ids[TRK].next(), "lat": w.DC_PARKING.lat, "lon": w.DC_PARKING.lon},
        "bad:missing_field")
    sentences = nmea_sentences(ctx.at(7.8), w.DC_PARKING.lat, w.DC_PARKING.lon, 0.0, 0.0)
    broken = sentences[0][:-2] + ("00" if not sentences[0].endswith("00") else "01")
    msg(7.8, TRK, "position", {"msg_id": ids[TRK].next(), "ts": epoch_ms(ctx.at(7.8)), "nmea": broken},
        "bad:invalid_field")
    bad_gtin = element_strings([("01", wrong_check_digit(w.YOG.gtin)), ("10", lot.lot)])
    msg(8, HH, "scan", {"msg_id": ids[HH].next(), "ts": rfc3339(ctx.at(8)), "code": bad_gtin, "mode": "receive",
                        "qty": 5, "location": w.DOCK2}, "bad:bad_check_digit")
    msg(8.2, HH, "scan", {"msg_id": ids[HH].next(), "ts": rfc3339(ctx.at(8.2)), "code": w.UNKNOWN_GTIN,
                          "mode": "receive", "qty": 1, "location": w.DOCK2}, "bad:unknown_gtin")
    # The skewed clock reads an hour plus the whole window ahead of simulated time: since the
    # simulated window ends when the run starts, that is always an hour ahead of the wall clock.
    skew = timedelta(hours=1, seconds=ctx.clock.span_s)
    for minute in (8.4, 8.6):
        msg(minute, SKEW, "env", {"msg_id": ids[SKEW].next(), "ts": rfc3339(ctx.at(minute) + skew), "temp_c": 4.4},
            "bad:ts_in_future")
    big = [env(8.8, probe=f"p{i % 10}") for i in range(3500)]
    msg(8.8, ENV, "env", big, "bad:payload_too_large")
    msg(9, ENV, "env", [], "bad:empty_array")
    msg(9.2, ENV, "env", "hello", "bad:not_an_object")

    sizes = [len(m.payload) for m in out if m.label == "bad:payload_too_large"]
    assert sizes and sizes[0] > 256 * 1024, "the oversized payload must exceed 256 KiB"
    devices = [DeviceDef(ENV, {"kind": "env_sensor", "site": w.SITE, "location": w.DOCK2}),
               DeviceDef(TRK, {"kind": "gps_tracker", "site": w.SITE}),
               DeviceDef(HH, {"kind": "scanner", "site": w.SITE, "location": w.DOCK2, "mode": "receive"}),
               DeviceDef(SKEW, {"kind": "env_sensor", "site": w.SITE, "location": w.DOCK2})]
    expected = {
        "dead_letters": dict(EXPECTED_DEAD_LETTERS),
        "env_readings": {ENV: 7, SKEW: 0},
        "positions": {TRK: 3},
        "movements": 1,
        "balances": {(w.YOG.sku, w.DOCK2, lot.lot): 5.0},
        "alarms": [],
        "devices": [ENV, TRK, HH, SKEW],
    }
    shows = [f"{sum(EXPECTED_DEAD_LETTERS.values())} dead letters: " +
             ", ".join(f"{k} x{v}" for k, v in EXPECTED_DEAD_LETTERS.items()),
             "7 env readings, 3 positions, 2 heartbeats, 1 movement (duplicates applied once)", "no alarms"]
    return ScenarioPlan(w.master_data(), devices, streams_of(out), expected, shows, len(out))
