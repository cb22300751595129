"""The service loop: SLA intake and breaches, return receipts, outbox fan-out and deliveries.

Where it runs: in the API process (``create_app(settings, service_loop=True)``, which
``cargotrace run``/``api`` use), on a thread with its own connection. Ingest workers stay
stateless and busy with the broker; the API is always up in every deployment and its work here
is I/O-bound. Several API processes may each run it: the fan-out takes its turn by a row lock,
deliveries are claimed with SKIP LOCKED, the sweeps lock each ticket or RMA row, so a second
process only shares the work.

A NOTIFY on ``cargotrace_events`` (every outbox insert) wakes it; otherwise it polls every
``notifier_interval_s`` (due retries, due SLA times).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from api.notify.senders import Attempt, send_email, send_webhook
from api.service_config import ServiceSettings
from api.store import rmas, subscriptions, tickets
from core.delivery import gives_up, next_attempt

log = logging.getLogger("cargotrace.notify")
CHANNEL = "cargotrace_events"


class ServiceLoop:
    def __init__(self, database_url: str, config: ServiceSettings) -> None:
        self.database_url = database_url
        self.config = config
        self.client = httpx.Client(timeout=config.webhook_timeout_s, follow_redirects=False)

    def close(self) -> None:
        self.client.close()

    def deliver_due(self, conn: psycopg.Connection, now: datetime | None = None, limit: int = 200) -> int:
        """Attempt each due pending delivery once; returns how many were attempted."""
        done = 0
        while done < limit:
            with conn.transaction():
                at = now or datetime.now(UTC)
                d = subscriptions.claim_due(conn, at)
                if d is None:
                    break
                result: Attempt = (send_webhook(self.client, d) if d["channel"] == "webhook"
                                   else send_email(self.config, d))
                ok, http_status, error = result
                attempts = d["attempts"] + 1
                failed = not ok and gives_up(d["created_at"], at, timedelta(hours=self.config.retry_for_h))
                next_at = None if ok else next_attempt(attempts, at, self.config.retry_base_s,
                                                       self.config.retry_max_s)
                subscriptions.record_attempt(conn, d["id"], at, ok, http_status, error, next_at, failed)
                if not ok:
                    log.info("delivery %s to %s failed (attempt %d): %s", d["id"], d["target"], attempts, error)
            done += 1
        return done

    def run_once(self, conn: psycopg.Connection) -> None:
        """One pass; each step on its own, so a failing one (logged) never starves the others."""
        now = datetime.now(UTC)

        def fan_out_all() -> None:
            while subscriptions.fan_out(conn) == subscriptions.FAN_OUT_PAGE:
                pass

        steps: list[tuple[str, Callable[[], object]]] = [
            ("intake", lambda: tickets.intake(conn, now)),
            ("SLA sweep", lambda: tickets.sweep_breaches(conn, now)),
            ("return receipts", lambda: rmas.receive_returns(conn)),
            ("fan-out", fan_out_all),
            ("deliveries", lambda: self.deliver_due(conn)),
        ]
        for name, step in steps:
            try:
                step()
            except psycopg.OperationalError:
                raise  # the connection is gone: the caller reconnects
            except Exception:
                log.exception("service loop: %s failed; the next pass retries", name)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: a database outage is logged and retried, never fatal."""
        while not stop.is_set():
            try:
                with psycopg.connect(self.database_url, autocommit=True,
                                     application_name="cargotrace-service-loop") as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not stop.is_set():
                        self.run_once(conn)
                        for _ in conn.notifies(timeout=self.config.notifier_interval_s, stop_after=1):
                            pass
            except (psycopg.Error, OSError):
                log.exception("service loop: database trouble; retrying")
                stop.wait(self.config.notifier_interval_s)


def start(database_url: str, config: ServiceSettings) -> tuple[threading.Thread, threading.Event, ServiceLoop]:
    stop = threading.Event()
    loop = ServiceLoop(database_url, config)
    thread = threading.Thread(target=loop.run, args=(stop,), name="cargotrace-service-loop", daemon=True)
    thread.start()
    return thread, stop, loop


def stop(thread: threading.Thread, event: threading.Event, loop: ServiceLoop) -> None:
    event.set()
    thread.join(timeout=loop.config.notifier_interval_s + loop.config.webhook_timeout_s + 5)
    loop.close()
