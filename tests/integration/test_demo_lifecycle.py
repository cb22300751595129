"""Issue 14 point 10: Ctrl-C stops `cargotrace demo` at any point, also while a scenario is playing,
and the broker the demo started stops with it. Run as a person runs it: a subprocess with its own
state directory, database and ports; SIGINT as the terminal sends it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ingest.db_roles import drop_service_roles
from tests.integration.broker_fixtures import free_port
from tests.integration.db_fixtures import recreate_database

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "cli.main"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[dict[str, str]]:
    url = make_conninfo(database_url, dbname=f"{conninfo_to_dict(database_url)['dbname']}_demo")
    recreate_database(url)
    drop_service_roles(url)
    values = {**os.environ, "CARGOTRACE_STATE_DIR": str(tmp_path_factory.mktemp("demo-state")),
              "CARGOTRACE_MQTT_PORT": str(free_port()), "CARGOTRACE_MQTT_TLS_PORT": str(free_port()),
              "CARGOTRACE_API_PORT": str(free_port()), "CARGOTRACE_DATABASE_URL": url,
              "CARGOTRACE_INGEST_WORKERS": "1", "COLUMNS": "200"}
    yield values
    subprocess.run([*CLI, "down"], env=values, cwd=ROOT, capture_output=True, timeout=90, check=False)


class Demo:
    """`cargotrace demo` in a subprocess, its output collected line by line as it comes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([*CLI, "demo"], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.output)
            if found:
                return found
            assert self.proc.poll() is None, f"the demo exited early:\n{self.output}"
            time.sleep(0.1)
        pytest.fail(f"no {pattern!r} in the demo's output within {timeout} s:\n{self.output}")

    def interrupt(self) -> float:
        """SIGINT, then the seconds until the process is gone."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the demo did not exit within 60 s of SIGINT:\n{self.output}")
        self._reader.join(10)
        return time.monotonic() - started


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("moment", ["sample traffic", "scenario playing"])
def test_ctrl_c_stops_the_demo_and_its_broker(env: dict[str, str], moment: str) -> None:
    demo = Demo(env)
    try:
        broker_pid = int(demo.wait_for(r"Mosquitto pid (\d+)").group(1))
        if moment == "sample traffic":
            demo.wait_for(r"provisioned \d+ demo devices")
        else:
            demo.wait_for(r"playing normal-day")
            # Playing means devices publishing: the scenario's first PUBACKed messages are stored.
            demo.wait_for(r"normal-day.*provisioned \d+ master records")
        seconds = demo.interrupt()
    finally:
        if demo.proc.poll() is None:
            demo.proc.kill()
    print(f"demo stopped {seconds:.1f} s after SIGINT during {moment}")
    assert demo.proc.returncode == 0, demo.output
    assert "stopped cleanly" in demo.output and "broker stopped" in demo.output
    assert "Traceback" not in demo.output, demo.output
    assert not alive(broker_pid), f"the demo's broker (pid {broker_pid}) still runs"
    assert not (Path(env["CARGOTRACE_STATE_DIR"]) / "broker" / "mosquitto.pid").exists()
    # The issue asks for 5 s; asserted with a margin for a loaded 2-core CI machine, printed above.
    assert seconds < 15, f"the demo took {seconds:.1f} s to stop"
