"""A customer return parked by one worker while another commits its serial's delivery (issue 9,
the race `cargotrace verify replay` found at seed 118): neither transaction sees the other's row,
so the delivery found no parked return to book and the return waited forever.

Two real connections interleave the two batches deterministically: the first holds its
transaction open; the second runs in a thread until it either finishes or waits for a lock (read
from pg_stat_activity, polled with a generous deadline); then the first commits. Whatever the
order, the return must be booked from the customer the serial was delivered to."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from ingest.pipeline import PipelineConfig, process_batch
from runtime.settings import Settings
from tests.integration.test_stock_order import _other_site
from tests.integration.world import GTIN_B, apply, build_world, gs1, scan

pytestmark = pytest.mark.integration

UNIT = gs1(GTIN_B, serial="RACE-1")
DELIVERY = scan("SC-2", "d1", UNIT, 1, mode="move", location="DOCK-1", to_location="CUST-B")
RETURN = scan("SC-X", "r1", UNIT, 9, ref="RMA-RACE")


def _waits_or_ends(watcher: psycopg.Connection, pid: int, done: threading.Event) -> None:
    """Poll (never sleep as synchronisation) until the other batch ended or waits for a lock."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if done.is_set():
            return
        row = watcher.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row is not None and row[0] == "Lock":
            return
        time.sleep(0.01)
    raise AssertionError("the second batch neither finished nor waited for a lock within 60 s")


@pytest.mark.parametrize("first", ["return", "delivery"])
def test_a_return_racing_its_delivery_is_booked_whoever_commits_first(db: psycopg.Connection, database_url: str,
                                                                      first: str) -> None:
    build_world(db)
    _other_site(db)
    apply(db, [scan("SC-1", "r0", UNIT, 0)])  # received at the DC
    batches = {"return": RETURN, "delivery": DELIVERY}
    second = "delivery" if first == "return" else "return"
    config = PipelineConfig.from_settings(Settings())
    failure: list[BaseException] = []
    done = threading.Event()

    def run_second(conn: psycopg.Connection) -> Callable[[], None]:
        def body() -> None:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    process_batch(cur, [batches[second]], config)
            except BaseException as exc:  # reported by the test thread below
                failure.append(exc)
            finally:
                done.set()
        return body

    with psycopg.connect(database_url) as one, psycopg.connect(database_url) as two, \
            psycopg.connect(database_url, autocommit=True) as watcher:
        thread = threading.Thread(target=run_second(two))
        with one.transaction(), one.cursor() as cur:
            process_batch(cur, [batches[first]], config)
            thread.start()
            _waits_or_ends(watcher, two.info.backend_pid, done)
        thread.join(timeout=120)
        assert not thread.is_alive() and not failure, failure
    assert db.execute("SELECT from_location, to_location FROM movements WHERE msg_id = 'r1'").fetchall() == [
        ("CUST-B", "RET-R")]
    assert db.execute("SELECT count(*) FROM stock_parked_returns").fetchone() == (0,)
    assert db.execute("SELECT location FROM serials WHERE serial = 'RACE-1'").fetchone() == ("RET-R",)
