"""TLS on the broker's second listener and the local stack's secrets, as an outside client
(issue 10 points 6-8 and 9): a TLS client connects, a plain one on the TLS port is refused, the
workers ingest over TLS, keys and passwords are private and never on a command line."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cli.local_broker import start_local_broker, stop_local_broker
from devices.broker_accounts import BrokerAccounts
from devices.buffer import OutboxBuffer
from devices.publisher import BrokerTarget, BufferedPublisher
from runtime.settings import Settings
from tests.integration.broker_fixtures import broker_test_settings
from tests.integration.stack_helpers import count, provision, running_worker, stack_settings, wait_until

pytestmark = pytest.mark.integration

TIMEOUT = 60.0
# An MQTT 3.1.1 CONNECT for client id "x", clean session, no credentials.
PLAIN_CONNECT = bytes([0x10, 13, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 60, 0, 1]) + b"x"


def _tls_client(settings: Settings, username: str, password: str, client_id: str,
                cafile: Path | None = None) -> tuple[mqtt.Client, threading.Event, list[ReasonCode]]:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(username, password)
    client.tls_set(ca_certs=str(cafile or settings.mqtt_ca_path))
    answered, codes = threading.Event(), []

    def on_connect(c: Any, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        codes.append(rc)
        answered.set()

    client.on_connect = on_connect
    return client, answered, codes


def test_a_tls_device_connects_and_its_data_is_ingested_over_tls(
        broker_settings: Settings, database_url: str, db: psycopg.Connection) -> None:
    settings = stack_settings(broker_settings, database_url, mqtt_tls=True)
    creds = provision(settings, db)
    client, answered, codes = _tls_client(settings, creds.username, creds.password, creds.device_id)
    with running_worker(settings) as worker:  # the worker itself connects with TLS (mqtt_client_port)
        assert worker._client._ssl  # paho's TLS flag: not a plain connection
        client.connect(settings.mqtt_host, settings.mqtt_tls_port)
        client.loop_start()
        try:
            assert answered.wait(TIMEOUT) and not codes[0].is_failure
            reading = {"msg_id": "over-tls", "ts": datetime.now(UTC).isoformat(), "temp_c": 3.0}
            info = client.publish(f"{settings.topic_prefix}/dev/{creds.device_id}/env", orjson.dumps(reading), qos=1)
            info.wait_for_publish(TIMEOUT)
            wait_until(lambda: count(db, "SELECT count(*) FROM env_readings WHERE msg_id = 'over-tls'") == 1,
                       timeout=TIMEOUT, what="the reading sent and ingested over TLS")
        finally:
            client.disconnect()
            client.loop_stop()
    with BrokerAccounts(settings) as accounts:  # the admin session over TLS as well
        assert accounts.device_exists(creds.device_id)


def test_a_plain_client_on_the_tls_port_is_refused(broker_settings: Settings) -> None:
    with socket.create_connection((broker_settings.mqtt_host, broker_settings.mqtt_tls_port), timeout=TIMEOUT) as s:
        s.sendall(PLAIN_CONNECT)
        reply = b""
        try:
            while chunk := s.recv(4096):
                reply += chunk
        except ConnectionResetError:
            pass
    assert not reply.startswith(b"\x20")  # no CONNACK: the broker only speaks TLS here


def test_a_client_that_does_not_trust_the_ca_is_refused(broker_settings: Settings, tmp_path: Path) -> None:
    other = broker_test_settings(tmp_path / "other")  # another stack, another CA
    from cli.broker_tls import broker_tls

    foreign_ca = broker_tls(other).cafile
    client, _, _ = _tls_client(broker_settings, broker_settings.mqtt_service_user,
                               broker_settings.mqtt_service_password, "cargotrace-tls-probe", foreign_ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect(broker_settings.mqtt_host, broker_settings.mqtt_tls_port)


def test_keys_and_secrets_are_private(broker_settings: Settings) -> None:
    tls_dir = broker_settings.broker_dir / "tls"
    for path in (tls_dir / "ca.key", tls_dir / "server.key", broker_settings.secrets_file,
                 broker_settings.broker_dir / "dynamic-security.json"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o700


def test_broker_admin_password_never_reaches_a_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every program the broker start runs is recorded (and still run): none gets the password."""
    argvs: list[list[str]] = []
    real_popen = subprocess.Popen

    class RecordingPopen(real_popen):  # type: ignore[misc,valid-type]
        def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
            argvs.append([str(a) for a in args])
            super().__init__(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", RecordingPopen)  # subprocess.run goes through Popen too
    settings = broker_test_settings(tmp_path)
    try:
        start_local_broker(settings)
        with BrokerAccounts(settings) as accounts:  # the admin password written works
            accounts.ensure_service_accounts()
    finally:
        stop_local_broker(settings)
    assert argvs, "the broker was started as a program"
    assert not any(settings.mqtt_admin_password in " ".join(argv) for argv in argvs)


def test_a_field_bridge_publishes_over_tls(broker_settings: Settings, database_url: str, db: psycopg.Connection,
                                           tmp_path: Path) -> None:
    """The bridges' publisher with CARGOTRACE_MQTT_CA_FILE: buffered messages reach ingest over TLS."""
    settings = stack_settings(broker_settings, database_url)
    creds = provision(settings, db)
    buffer = OutboxBuffer(tmp_path / "outbox.db")
    buffer.append("env", {"msg_id": "bridge-tls", "ts": datetime.now(UTC).isoformat(), "temp_c": 5.0})
    target = BrokerTarget(settings.mqtt_host, settings.mqtt_tls_port, settings.topic_prefix, creds.device_id,
                          creds.password, str(settings.mqtt_ca_path))
    publisher = BufferedPublisher(buffer, target)
    with running_worker(settings):
        publisher.start()
        try:
            wait_until(lambda: count(db, "SELECT count(*) FROM env_readings WHERE msg_id = 'bridge-tls'") == 1,
                       timeout=TIMEOUT, what="the bridge's reading over TLS")
        finally:
            publisher.close(drain_timeout_s=5)
    assert len(buffer) == 0
    buffer.close()


def test_simulated_devices_publish_over_tls(broker_settings: Settings, database_url: str,
                                            db: psycopg.Connection) -> None:
    import asyncio

    from runtime.mqtt_tls import tls_context
    from simulators.clock import SimClock
    from simulators.messages import Message
    from simulators.runner import run_devices

    settings = stack_settings(broker_settings, database_url, mqtt_tls=True)
    creds = provision(settings, db)
    clock = SimClock.ending_now(duration_s=1.0, speedup=1.0)
    reading = orjson.dumps({"msg_id": "sim-tls", "ts": clock.sim_start.isoformat(), "temp_c": 4.0})
    streams = {creds.device_id: [Message(clock.sim_start, creds.device_id, "env", reading)]}
    with running_worker(settings):
        stats = asyncio.run(run_devices(settings.mqtt_host, settings.mqtt_client_port, settings.topic_prefix,
                                        {creds.device_id: creds.password}, streams, clock, tls=tls_context(settings)))
        assert stats.failed == 0
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings WHERE msg_id = 'sim-tls'") == 1,
                   timeout=TIMEOUT, what="the simulated reading over TLS")
