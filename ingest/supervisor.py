"""Run N ingest worker processes (and the periodic maintenance) until told to stop."""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from types import FrameType

import psycopg

from ingest.db import StoreError, connect
from ingest.maintenance import apply_retention
from runtime.logs import configure_logging
from runtime.settings import Settings

log = logging.getLogger("cargotrace.supervisor")


def _worker_main(settings: Settings, index: int) -> None:
    from ingest.transport import make_worker

    configure_logging(settings.log_level)
    worker = make_worker(settings, index)

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; Ctrl-C reaches it too
    try:
        worker.run()
    except StoreError as exc:
        log.error("worker %d: %s", index, exc)
        raise SystemExit(2) from None


def maintenance_loop(settings: Settings, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            with connect(settings.database_url, autocommit=True) as conn:
                report = apply_retention(conn, settings)
            log.info("maintenance: chunks dropped %s, dead letters deleted %d, identities expired %d",
                     report.chunks_dropped, report.dead_letters_deleted, report.message_ids_deleted)
        except StoreError as exc:
            log.warning("maintenance skipped: %s", exc)
        if stop.wait(settings.maintain_interval_s):
            return


def health_loop(settings: Settings, stop: threading.Event, interval_s: float = 30.0) -> None:
    """Wall-clock rules no message triggers: devices gone silent, promises passing."""
    from datetime import UTC, datetime

    from ingest.telemetry_rules import mark_offline, refresh_open_shipments

    while not stop.wait(interval_s):
        try:
            with connect(settings.database_url) as conn:
                offline = mark_offline(conn, settings.device_offline_after_s, settings.device_offline_multiple)
                refreshed = refresh_open_shipments(conn, datetime.now(UTC))
            if offline or refreshed:
                log.info("health: %d device(s) went offline, %d overdue shipment(s) re-evaluated", offline, refreshed)
        except (StoreError, psycopg.Error) as exc:
            log.warning("health check skipped: %s", str(exc).strip().splitlines()[0])


class Supervisor:
    def __init__(self, settings: Settings, workers: int, *, maintain: bool = True) -> None:
        self.settings = settings
        self.count = workers
        self.maintain = maintain
        self.stop_event = threading.Event()
        self._ctx = mp.get_context("spawn")
        self._procs: dict[int, BaseProcess] = {}
        self._restarts: dict[int, float] = {}

    def _start(self, index: int) -> None:
        proc = self._ctx.Process(target=_worker_main, args=(self.settings, index), name=f"ingest-{index}")
        proc.start()
        self._procs[index] = proc

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values() if p.pid is not None]

    def request_stop(self, *_args: object) -> None:
        self.stop_event.set()

    def run(self, on_tick: Callable[[], None] | None = None) -> None:
        for i in range(self.count):
            self._start(i)
        log.info("started %d ingest worker(s)", self.count)
        if self.maintain:
            for loop in (maintenance_loop, health_loop):
                threading.Thread(target=loop, args=(self.settings, self.stop_event), daemon=True).start()
        try:
            while not self.stop_event.wait(0.5):
                self._reap()
                if on_tick:
                    on_tick()
        finally:
            self.shutdown()

    def _reap(self) -> None:
        for index, proc in list(self._procs.items()):
            if proc.is_alive():
                continue
            # Back off a worker that keeps dying (a missing service, say) instead of spinning.
            last = self._restarts.get(index, 0.0)
            if time.monotonic() - last < 5:
                continue
            log.warning("worker %d exited with %s; restarting", index, proc.exitcode)
            self._restarts[index] = time.monotonic()
            self._start(index)

    def shutdown(self, timeout: float = 20.0) -> None:
        for proc in self._procs.values():
            if proc.is_alive() and proc.pid:
                proc.terminate()  # SIGTERM: the worker finishes its batch, commits, acks, disconnects
        deadline = time.monotonic() + timeout
        for proc in self._procs.values():
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker %s did not stop in time; killing it", proc.name)
                proc.kill()
                proc.join(2)


def wait_until_connected(settings: Settings, workers: int, timeout: float = 30.0) -> None:
    """Workers open their database connection right after the broker accepted their session."""
    deadline = time.monotonic() + timeout
    with connect(settings.database_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                               (f"{settings.ingest_client_prefix}-%",)).fetchone()
            if row and row[0] >= workers:
                return
            time.sleep(0.05)
    raise StoreError(f"the ingest workers did not connect within {timeout:.0f} s (see the log above)")
