"""The serial scanner bridge shows the server's feedback: a pty stands in for the scanner; a refused
and an accepted scan's feedback rows go out through the real downlink publisher and broker, and the
configured beep and line arrive on the scanner's serial line."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devices.bridge_cli import run_scanner_bridge
from devices.broker_accounts import BrokerAccounts
from devices.provisioning import Credentials
from devices.scanner_bridge import FeedbackConfig, feedback_bytes
from ingest.downlink import running_downlink
from runtime.settings import Settings
from tests.integration.stack_helpers import provision, stack_settings
from tests.integration.test_bridges import bridge

pytestmark = pytest.mark.integration


def test_feedback_bytes_are_configurable() -> None:
    config = FeedbackConfig.from_text("\\x07", "\\x07\\x07", "{ok} {reason}\\r\\n")
    assert feedback_bytes({"ok": False, "reason": "wrong_bin", "task_id": "T", "msg_id": "m"}, config) == \
        b"\x07\x07NO wrong_bin\r\n"
    assert feedback_bytes({"ok": True, "reason": "done"}, config) == b"\x07OK done\r\n"
    assert feedback_bytes({"ok": True}, FeedbackConfig.from_text("\\x07", "", "")) == b"\x07"


@pytest.fixture
def scanner(broker_settings: Settings, db: psycopg.Connection) -> Iterator[Credentials]:
    creds = provision(broker_settings, db, kind="scanner")
    yield creds
    with BrokerAccounts(broker_settings) as accounts:
        accounts.remove_device(creds.device_id)


def read_until(fd: int, wanted: bytes, timeout: float = 60.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while wanted not in got and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            got += os.read(fd, 4096)
    return got


def test_the_scanner_beeps_and_shows_the_feedback(broker_settings: Settings, database_url: str,
                                                  db: psycopg.Connection, scanner: Credentials,
                                                  tmp_path: Path) -> None:
    settings = stack_settings(broker_settings, database_url)
    config = FeedbackConfig.from_text("<ok>", "<no>", "{ok} {reason} {task_id}\\n")
    with running_downlink(settings), bridge(run_scanner_bridge, scanner, settings, tmp_path / "buf.db",
                                            feedback=config) as pty:
        # The bridge subscribes asynchronously: feedback is not retained, so repeat until one arrives.
        deadline = time.monotonic() + 60
        got = b""
        n = 0
        while b"NO wrong_bin T-1" not in got and time.monotonic() < deadline:
            n += 1
            db.execute("INSERT INTO scan_feedback (device_id, msg_id, ok, reason, task_id) VALUES (%s, %s, false, "
                       "'wrong_bin', 'T-1')", (scanner.device_id, f"m{n}"))
            got += read_until(pty.master, b"NO wrong_bin T-1", timeout=1.0)
        assert got.startswith(b"<no>NO wrong_bin T-1\n")
        db.execute("INSERT INTO scan_feedback (device_id, msg_id, ok, reason, task_id) VALUES (%s, 'ok1', true, "
                   "'done', 'T-1')", (scanner.device_id,))
        assert b"<ok>OK done T-1\n" in read_until(pty.master, b"OK done T-1\n")
