"""RFID reads at a dock door to passages and movements, through the real pipeline and database."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import orjson
import psycopg
import pytest

from core.epc import encode_sgtin96
from ingest.decode import Inbound
from ingest.rfid_sweep import sweep
from tests.integration.world import GTIN_C, PREFIX, T0, apply, build_world

pytestmark = pytest.mark.integration

RECEIVED = T0 + timedelta(days=1)
OUTER, INNER = (1, 2), (3, 4)  # GATE-1: outer at DOOR-OUT, inner at DOOR-IN, RSSI floor -70 dBm


def tag(serial: int) -> str:
    return encode_sgtin96(GTIN_C, serial, 7, filter_value=3)


def passage_reads(epc: str, start: datetime, inbound: bool, rng: random.Random,
                  zones: tuple[tuple[int, ...], ...] = (OUTER, INNER)) -> list[dict[str, object]]:
    """A tag carried through the door over 2 s: each zone's RSSI peaks as it passes, ~35% missed."""
    first, second = (zones[0], zones[-1]) if inbound else (zones[-1], zones[0])
    reads = []
    for i in range(40):
        t = i * 0.05
        for antennas, peak_at in ((first, 0.5), (second, 1.5)):
            if len(zones) == 1 and antennas is second and first is not second:
                continue
            if rng.random() < 0.35:
                continue
            rssi = -45 - 18 * abs(t - peak_at)
            if rssi < -70:
                continue
            reads.append({"epc": epc, "antenna": rng.choice(antennas), "rssi": round(rssi, 1),
                          "ts": (start + timedelta(seconds=t)).isoformat()})
    return reads


def messages(reads: list[dict[str, object]], rng: random.Random, per_msg: int = 7) -> list[Inbound]:
    rng.shuffle(reads)
    out = []
    for n, i in enumerate(range(0, len(reads), per_msg)):
        body = {"msg_id": f"r{n}-{rng.random():.8f}", "ts": T0.isoformat(), "reads": reads[i:i + per_msg]}
        out.append(Inbound(f"{PREFIX}/dev/GATE-1/rfid", orjson.dumps(body), RECEIVED))
    return out


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    return db


def test_gate_passages_move_each_tag_once_in_its_direction(world: psycopg.Connection) -> None:
    rng = random.Random(11)
    reads: list[dict[str, object]] = []
    for k in range(5):  # a pallet of five crates comes in
        reads += passage_reads(tag(100 + k), T0 + timedelta(seconds=k * 0.1), True, rng)
    reads += passage_reads(tag(900), T0 + timedelta(seconds=30), False, rng)        # one crate goes out later
    reads += passage_reads(tag(500), T0, True, rng, zones=(OUTER,))                 # seen at the outer zone only
    reads += [{"epc": tag(777), "antenna": 1, "rssi": -82.0, "ts": T0.isoformat()}] * 5  # neighbouring door
    sscc = "3174257BF4499602D2000000"                                                # a pallet label (SSCC-96)
    reads += passage_reads(sscc, T0, True, rng)
    apply(world, messages(reads, rng))
    result = sweep(world, wall_now=RECEIVED + timedelta(seconds=10))
    assert result.movements == 6
    moves = world.execute("SELECT serial, from_location, to_location, biz_step, qty, device_id FROM movements "
                          "ORDER BY serial").fetchall()
    assert moves == [(str(100 + k), "DOOR-OUT", "DOOR-IN", "receiving", 1, "GATE-1") for k in range(5)] + [
        ("900", "DOOR-IN", "DOOR-OUT", "shipping", 1, "GATE-1")]
    observations = dict(world.execute("SELECT epc, coalesce(reason, direction) FROM rfid_passages "
                                      "WHERE movement IS NULL").fetchall())
    assert observations == {tag(500): "one_zone_only", sscc: "not_a_trade_item"}
    assert world.execute("SELECT scheme, sscc FROM rfid_passages WHERE epc = %s", (sscc,)).fetchone() == (
        "sscc", "106141412345678908")  # the pallet itself is recorded as an observation
    assert world.execute("SELECT count(*) FROM rfid_passages WHERE epc = %s", (tag(777),)).fetchone() == (0,)
    # Sweeping again finds the same passages and records nothing twice.
    assert sweep(world, wall_now=RECEIVED + timedelta(seconds=20)).movements == 0
    assert world.execute("SELECT count(*) FROM movements").fetchone() == (6,)


def test_a_passage_still_in_progress_is_not_decided(world: psycopg.Connection) -> None:
    rng = random.Random(3)
    apply(world, messages(passage_reads(tag(1), T0, True, rng), rng))
    # The gate's reads arrived just now: the tag may still be in the doorway.
    assert sweep(world, wall_now=RECEIVED + timedelta(seconds=1)).passages == 0
    assert sweep(world, wall_now=RECEIVED + timedelta(seconds=7)).movements == 1


def test_arrival_order_of_reads_does_not_change_passages(database_url: str, world: psycopg.Connection) -> None:
    outcomes = []
    for seed in (1, 2, 3):
        world.execute("TRUNCATE rfid_reads, rfid_passages, movements, balances, serials, message_ids, device_state "
                      "RESTART IDENTITY CASCADE")
        rng = random.Random(99)
        reads = [r for k in range(3) for r in passage_reads(tag(k), T0 + timedelta(seconds=k), k != 1, rng)]
        apply(world, messages(reads, random.Random(seed), per_msg=3 + seed))
        sweep(world, wall_now=RECEIVED + timedelta(seconds=10))
        outcomes.append(world.execute("SELECT epc, first_ts, last_ts, direction, reads FROM rfid_passages "
                                      "ORDER BY epc").fetchall())
    assert outcomes[0] == outcomes[1] == outcomes[2] and len(outcomes[0]) == 3
