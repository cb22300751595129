"""Scans to the stock ledger through the real ingest pipeline and the real database."""

from __future__ import annotations

import random
import threading
from decimal import Decimal

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.db import connect
from ingest.rebuild import rebuild
from tests.integration.db_fixtures import truncate_all
from tests.integration.world import (
    GTIN_A,
    GTIN_B,
    apply,
    balances,
    build_world,
    gs1,
    net_ledger,
    scan,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def world(db: psycopg.Connection) -> psycopg.Connection:
    build_world(db)
    return db


def movements(db: psycopg.Connection) -> list[tuple[object, ...]]:
    return db.execute("SELECT sku, qty, from_location, to_location, lot, serial, expiry::text, biz_step, ref, "
                      "device_id, msg_id, reverses FROM movements ORDER BY id").fetchall()


def test_receive_from_the_sites_supplier_with_lot_and_expiry(world: psycopg.Connection) -> None:
    result = apply(world, [scan("SC-1", "r1", gs1(GTIN_A, lot="L7", expiry="261231"), 0, qty=24)])
    assert len(result.applied) == 1
    assert movements(world) == [("SKU-A", Decimal(24), "SUP-ACME", "DOCK-1", "L7", None, "2026-12-31", "receiving",
                                 None, "SC-1", "r1", None)]
    assert balances(world) == {("SKU-A", "DOCK-1", "L7"): 24, ("SKU-A", "SUP-ACME", "L7"): -24}
    assert world.execute("SELECT expiry::text FROM balances WHERE location = 'DOCK-1'").fetchone() == ("2026-12-31",)
    assert world.execute("SELECT count(*) FROM scans").fetchone() == (1,)


def test_every_mode_moves_stock_where_the_contract_says(world: psycopg.Connection) -> None:
    b = gs1(GTIN_B)
    apply(world, [
        scan("SC-1", "m1", b, 0, qty=10),                                                  # receive (device default)
        scan("SC-2", "m2", b, 1, mode="putaway", location="DOCK-1", to_location="BIN-A1", qty=10),
        scan("SC-2", "m3", b, 2, mode="move", to_location="BIN-A2", qty=4),               # device location BIN-A1
        scan("SC-2", "m4", b, 3, mode="pick", location="BIN-A2", qty=3),                  # no ref: to staging
        scan("SC-2", "m5", b, 4, mode="pick", location="BIN-A1", qty=2, ref="SHP-1"),     # ref: to the vehicle
        scan("SC-2", "m6", b, 5, mode="ship", location="STAGE-1", qty=3, ref="SHP-1"),
        scan("SC-2", "m7", b, 6, mode="deliver", qty=5, ref="SHP-1"),
        scan("SC-2", "m8", "5901234123457", 7, mode="return", location="RET-1", qty=1, ref="RMA-9"),
    ])
    moves = [(m[1], m[2], m[3], m[7], m[8]) for m in movements(world)]
    assert moves == [
        (10, "SUP-ACME", "DOCK-1", "receiving", None), (10, "DOCK-1", "BIN-A1", "storing", None),
        (4, "BIN-A1", "BIN-A2", "storing", None), (3, "BIN-A2", "STAGE-1", "picking", None),
        (2, "BIN-A1", "TRUCK-1", "picking", "SHP-1"), (3, "STAGE-1", "TRUCK-1", "loading", "SHP-1"),
        (5, "TRUCK-1", "CUST-1", "arriving", "SHP-1"), (1, "CUST-1", "RET-1", "receiving", "RMA-9")]
    assert balances(world) == {
        ("SKU-B", "SUP-ACME", ""): -10, ("SKU-B", "BIN-A1", ""): 4, ("SKU-B", "BIN-A2", ""): 1,
        ("SKU-B", "CUST-1", ""): 4, ("SKU-B", "RET-1", ""): 1}
    total = world.execute("SELECT sum(qty) FROM balances").fetchone()
    assert total == (0,)  # double entry: every item nets to zero over all locations


def test_count_posts_the_difference_to_inventory_loss(world: psycopg.Connection) -> None:
    b = gs1(GTIN_B)
    apply(world, [scan("SC-1", "c0", b, 0, qty=10, location="BIN-A1")])
    apply(world, [scan("SC-2", "c1", b, 5, mode="count", qty=7)])      # shortfall of 3
    apply(world, [scan("SC-2", "c2", b, 9, mode="count", qty=9)])      # surplus of 2
    moves = [(m[1], m[2], m[3], m[7]) for m in movements(world)]
    assert moves[1:] == [(3, "BIN-A1", "LOSS-1", "cycle_counting"), (2, "LOSS-1", "BIN-A1", "cycle_counting")]
    assert balances(world)[("SKU-B", "BIN-A1", "")] == 9


def test_backdated_movement_redecides_the_count_by_reversal(world: psycopg.Connection) -> None:
    b = gs1(GTIN_B)
    apply(world, [scan("SC-1", "x0", b, 0, qty=10, location="BIN-A1")])
    apply(world, [scan("SC-2", "x1", b, 10, mode="count", qty=6)])         # adjustment: 4 to loss
    apply(world, [scan("SC-2", "x2", b, 5, mode="pick", qty=4)])           # late: happened before the count
    assert balances(world)[("SKU-B", "BIN-A1", "")] == 6                    # the count still holds
    moves = movements(world)
    reversed_ids = [m[11] for m in moves if m[11] is not None]
    assert len(reversed_ids) == 1  # the first adjustment was reversed, not edited or deleted
    assert world.execute("SELECT count(*) FROM movements WHERE source = 'count'").fetchone() == (1,)
    assert ("SKU-B", "LOSS-1", "") not in balances(world)  # the pick explains the gap; no loss left


@pytest.mark.parametrize(("message", "reason"), [
    (scan("SC-1", "u1", gs1("00012345600012"), 0), "unknown_gtin"),
    (scan("SC-1", "u2", "]C10109506000134353", 0), "bad_check_digit"),
    (scan("ENV-1", "u3", gs1(GTIN_B), 0, mode="receive"), "mode_not_allowed"),
    (scan("SC-2", "u4", gs1(GTIN_B), 0, mode="putaway"), "missing_location"),
    (scan("SC-2", "u5", gs1(GTIN_B), 0, mode="ship", ref="NOPE"), "unknown_shipment"),
    (scan("SC-2", "u6", gs1(GTIN_B), 0, mode="move", to_location="NOWHERE"), "unknown_location"),
    (scan("SC-2", "u7", "hello world", 0, mode="receive"), "unparseable_code"),
    (scan("SC-2", "u8", gs1(GTIN_B, serial="S1"), 0, mode="receive", qty=2), "serial_quantity"),
])
def test_scans_that_cannot_be_stock_are_dead_letters(world: psycopg.Connection, message: object,
                                                     reason: str) -> None:
    result = apply(world, [message, scan("SC-1", "ok", gs1(GTIN_B), 0)])  # type: ignore[list-item]
    assert world.execute("SELECT reason FROM dead_letters").fetchall() == [(reason,)]
    assert [r.msg_id for r in result.applied] == ["ok"]  # its neighbour still lands
    assert world.execute("SELECT msg_id FROM scans").fetchall() == [("ok",)]
    # Not claimed as applied: a replay after the master data is fixed will apply it.
    assert world.execute("SELECT count(*) FROM message_ids").fetchone() == (1,)


def test_negative_physical_stock_raises_and_clears_a_discrepancy_alarm(world: psycopg.Connection) -> None:
    b = gs1(GTIN_B)
    apply(world, [scan("SC-2", "n1", b, 0, mode="pick", qty=2)])    # nothing booked at BIN-A1 yet
    assert balances(world)[("SKU-B", "BIN-A1", "")] == -2          # recorded anyway: the scan is the truth
    alarm = world.execute("SELECT type, state, location, sku, peak_value FROM alarms").fetchall()
    assert alarm == [("stock_discrepancy", "active", "BIN-A1", "SKU-B", -2.0)]
    apply(world, [scan("SC-1", "n2", b, 1, qty=5, location="BIN-A1")])
    assert world.execute("SELECT state FROM alarms").fetchall() == [("cleared",)]
    # Suppliers are virtual and negative by design: never an alarm there.
    assert world.execute("SELECT count(*) FROM alarms WHERE location = 'SUP-ACME'").fetchone() == (0,)


def test_serial_location_follows_event_time_not_arrival(world: psycopg.Connection) -> None:
    unit = gs1(GTIN_B, serial="SN-1")
    apply(world, [scan("SC-1", "s1", unit, 0)])
    apply(world, [scan("SC-2", "s3", unit, 20, mode="move", location="BIN-A1", to_location="BIN-A2")])
    apply(world, [scan("SC-2", "s2", unit, 10, mode="putaway", location="DOCK-1", to_location="BIN-A1")])  # late
    assert world.execute("SELECT location FROM serials WHERE serial = 'SN-1'").fetchone() == ("BIN-A2",)


def test_rebuild_reproduces_the_live_balances(world: psycopg.Connection) -> None:
    b, a = gs1(GTIN_B), gs1(GTIN_A, lot="L1", expiry="270101")
    apply(world, [scan("SC-1", "b1", b, 0, qty=10), scan("SC-1", "b2", a, 1, qty=5),
                  scan("SC-2", "b3", b, 2, mode="putaway", location="DOCK-1", to_location="BIN-A1", qty=6),
                  scan("SC-2", "b4", b, 3, mode="count", qty=4), scan("SC-2", "b5", b, 1, mode="count", qty=1)])
    live = balances(world)
    live_expiry = world.execute("SELECT sku, location, lot, expiry FROM balances WHERE qty <> 0 ORDER BY 1, 2, 3"
                                ).fetchall()
    check = rebuild(world, write=False)
    assert check.differences == []
    world.execute("UPDATE balances SET qty = qty + 100 WHERE location = 'BIN-A1'")  # corrupt the derived state
    assert len(rebuild(world, write=False).differences) == 1
    report = rebuild(world)
    assert balances(world) == live and report.balances == len(live)
    assert world.execute("SELECT sku, location, lot, expiry FROM balances WHERE qty <> 0 ORDER BY 1, 2, 3"
                         ).fetchall() == live_expiry


# --- order independence ------------------------------------------------------------------------

def _stream() -> list:
    b, a = gs1(GTIN_B), gs1(GTIN_A, lot="L1", expiry="270101")
    return [
        scan("SC-1", "p01", b, 0, qty=20), scan("SC-1", "p02", a, 1, qty=8),
        scan("SC-2", "p03", b, 2, mode="putaway", location="DOCK-1", to_location="BIN-A1", qty=15),
        scan("SC-2", "p04", a, 3, mode="putaway", location="DOCK-1", to_location="BIN-A1", qty=8),
        scan("SC-2", "p05", b, 4, mode="count", qty=14),
        scan("SC-2", "p06", b, 5, mode="pick", qty=6, ref="SHP-1"),
        scan("SC-2", "p07", a, 6, mode="pick", qty=3),
        scan("SC-2", "p08", b, 7, mode="count", qty=7),
        scan("SC-2", "p09", b, 8, mode="move", to_location="BIN-A2", qty=2),
        scan("SC-2", "p10", b, 9, mode="ship", location="STAGE-1", qty=1, ref="SHP-1"),
        scan("SC-2", "p11", b, 10, mode="deliver", qty=6, ref="SHP-1"),
        scan("SC-2", "p12", b, 11, mode="return", location="RET-1", qty=1, ref="RMA-1"),
        scan("SC-2", "p13", a, 12, mode="count", qty=6),
        scan("SC-2", "p14", b, 13, mode="pick", location="BIN-A2", qty=5),  # drives BIN-A2 negative
    ]


def _state(db: psycopg.Connection) -> tuple[object, ...]:
    active = db.execute("SELECT type, subject FROM alarms WHERE state = 'active' ORDER BY 2").fetchall()
    return net_ledger(db), balances(db), active


@pytest.fixture(scope="module")
def ordered_state(database_url: str) -> tuple[object, ...]:
    with connect(database_url, autocommit=True) as db:
        truncate_all(db)
        build_world(db)
        apply(db, _stream())
        assert rebuild(db, write=False).differences == []
        return _state(db)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_order_with_duplicates_gives_the_same_ledger_and_balances(
        database_url: str, ordered_state: tuple[object, ...], data: st.DataObject) -> None:
    stream = _stream()
    shuffled = data.draw(st.permutations(stream))
    dup_idx = data.draw(st.lists(st.integers(0, len(stream) - 1), max_size=6))
    messages = list(shuffled) + [stream[i] for i in dup_idx]
    random.Random(data.draw(st.integers(0, 10**6))).shuffle(messages)
    cuts = sorted(data.draw(st.lists(st.integers(1, len(messages) - 1), max_size=4, unique=True)))
    with connect(database_url, autocommit=True) as db:
        truncate_all(db)
        build_world(db)
        for start, end in zip([0, *cuts], [*cuts, len(messages)], strict=True):
            apply(db, messages[start:end])
        assert _state(db) == ordered_state
        assert rebuild(db, write=False).differences == []


def test_concurrent_workers_on_the_same_stock_stay_correct(world: psycopg.Connection, database_url: str) -> None:
    b = gs1(GTIN_B)
    apply(world, [scan("SC-1", "seed", b, 0, qty=1000, location="BIN-A1")])
    picks = [scan("SC-2", f"k{i}", b, 1 + i / 100, mode="pick", qty=1) for i in range(200)]
    counts = [scan("SC-2", f"q{i}", b, 1 + i / 10 + 0.005, mode="count", qty=900 - i) for i in range(20)]
    work = picks + counts
    random.Random(7).shuffle(work)
    halves = [work[0::2], work[1::2]]
    errors: list[BaseException] = []

    def run(part: list) -> None:
        try:
            with connect(database_url, autocommit=True) as conn:
                for i in range(0, len(part), 7):
                    apply(conn, part[i:i + 7])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(h,)) for h in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    concurrent = (net_ledger(world), balances(world))
    assert rebuild(world, write=False).differences == []
    truncate_all(world)
    build_world(world)
    apply(world, [scan("SC-1", "seed", b, 0, qty=1000, location="BIN-A1")])
    apply(world, sorted(work, key=lambda m: m.payload))
    assert (net_ledger(world), balances(world)) == concurrent


def test_dead_letter_replay_applies_a_scan_once_its_item_exists(world: psycopg.Connection) -> None:
    from ingest.pipeline import PipelineConfig
    from ingest.replay import replay
    from runtime.settings import Settings

    unknown = gs1("04006381333931")  # a valid GTIN not in the item master yet
    apply(world, [scan("SC-1", "late-item", unknown, 0, qty=3), scan("SC-1", "junk", "]C1garbage", 0)])
    world.execute("INSERT INTO dead_letters (received_at, last_received_at, topic, reason, detail, payload, "
                  "payload_size, fingerprint) VALUES (now(), now(), 'cargotrace/v1/dev/SC-1/scan', 'invalid_json', "
                  "'x', '{', 1, 'fp')")
    config = PipelineConfig.from_settings(Settings())
    first = replay(world, config)
    assert sorted(r.outcome for r in first) == ["rejected: unknown_gtin", "rejected: unparseable_code"]
    assert world.execute("SELECT count(*) FROM movements").fetchone() == (0,)
    world.execute("INSERT INTO items (sku, name, gtin) VALUES ('SKU-N', 'New item', '04006381333931')")
    second = replay(world, config, reason="unknown_gtin")
    assert [r.outcome for r in second] == ["applied"]
    assert movements(world)[0][:4] == ("SKU-N", Decimal(3), "SUP-ACME", "DOCK-1")
    marked = world.execute("SELECT reason, replayed_at IS NOT NULL, replay_result FROM dead_letters ORDER BY reason"
                           ).fetchall()
    assert marked == [("invalid_json", False, None),  # a malformed payload is final: never replayed
                      ("unknown_gtin", True, "applied"), ("unparseable_code", False, "rejected: unparseable_code")]
    assert replay(world, config, reason="unknown_gtin") == []  # applied letters are not replayed again


def test_a_return_comes_from_the_customer_its_serial_was_delivered_to_even_at_another_site(
        world: psycopg.Connection) -> None:
    world.execute("INSERT INTO sites (code, name) VALUES ('SITE-B', 'Customer site')")
    world.execute("INSERT INTO locations (code, site, type) VALUES ('CUST-B', 'SITE-B', 'customer')")
    unit = gs1(GTIN_B, serial="PEN-1")
    apply(world, [scan("SC-1", "r0", unit, 0),
                  scan("SC-2", "r1", unit, 1, mode="move", location="DOCK-1", to_location="CUST-B")])
    apply(world, [scan("SC-2", "r2", unit, 9, mode="return", location="RET-1", ref="RMA-7")])
    assert world.execute("SELECT count(*) FROM dead_letters").fetchone() == (0,)
    assert movements(world)[-1][2:4] == ("CUST-B", "RET-1")
    assert world.execute("SELECT location FROM serials WHERE serial = 'PEN-1'").fetchone() == ("RET-1",)
