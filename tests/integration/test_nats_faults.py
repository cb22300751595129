"""Fault tests on a real 3-node NATS cluster: a node killed, all nodes restarted, a worker lost mid-batch,
a device moving to another node. Nothing acknowledged is lost and nothing is applied twice.

Publishers here are JetStream-confirmed (nats-py ``js.publish`` waits for the stream's PubAck after
the replicated write, with a ``Nats-Msg-Id`` the stream de-duplicates on resend). Devices' MQTT
QoS 1 publishes do not get that guarantee from nats-server (2.9.10, and 2.15.1 checked too): its
MQTT listener PUBACKs before JetStream stores, so a node death can drop MQTT messages already
acknowledged to the device; see the README's known limitations.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cli.cluster import stream_state
from cli.local_broker import _find_binary
from cli.local_nats import (
    accounts_file,
    free_port_block,
    node_pid,
    nodes,
    start_local_cluster,
    start_node,
    stop_local_cluster,
    stop_node,
    wait_healthy,
)
from devices.accounts import open_accounts
from ingest.transport import make_worker, prepare_ingest
from ingest.transport.nats import connect_service
from runtime.settings import Settings, load_settings
from tests.integration.stack_helpers import count, provision, stack_settings, wait_until
from tests.integration.test_nats_cluster import SLOW, jetstream_worker, mqtt_device, on_node

pytestmark = [pytest.mark.integration, pytest.mark.cluster_faults]

ACK_WAIT_S = 5.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    base = free_port_block()
    settings = load_settings(create_secrets=True, state_dir=tmp_path_factory.mktemp("nats-faults"), broker="nats",
                             nats_port_base=base, mqtt_host="127.0.0.1", mqtt_port=base + 10,
                             nats_ack_wait_s=ACK_WAIT_S)
    try:
        open_accounts(settings).ensure_service_accounts()
        start_local_cluster(settings)
        prepare_ingest(settings, 1)
        yield settings
    finally:
        stop_local_cluster(settings)


@pytest.fixture
def settings(cluster: Settings, database_url: str, db: psycopg.Connection) -> Settings:
    return stack_settings(cluster, database_url, ingest_batch_max=500)


def _restart(settings: Settings, index: int) -> None:
    members = nodes(settings)
    start_node(_find_binary(settings.nats_bin), members[index], members, accounts_file(settings))
    wait_healthy(members, SLOW)


async def _publish_confirmed(settings: Settings, url: str, device_id: str, ids: range, stop_at: threading.Event | None,
                             progress: list[int]) -> None:
    """Publish env messages of one device through one node until each has a PubAck; resend on any error."""
    one_node = settings.model_copy(update={"nats_servers": ",".join([url, *settings.nats_urls()])})
    nc = await connect_service(one_node, f"publisher-{device_id}")
    js = nc.jetstream(timeout=10)
    now = datetime.now(UTC).isoformat()
    window = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        body = orjson.dumps({"msg_id": f"m{i}", "ts": now, "temp_c": i % 40})
        async with window:
            while True:
                try:
                    await js.publish(f"cargotrace.v1.dev.{device_id}.env", body,
                                     headers={"Nats-Msg-Id": f"{device_id}/m{i}"})
                    progress.append(1)
                    return
                except Exception:  # any failure during a failover: resend; the stream dedupes by Nats-Msg-Id
                    await asyncio.sleep(0.2)

    try:
        await asyncio.gather(*(one(i) for i in ids))
    finally:
        await nc.close()


def _publishers(settings: Settings, device_ids: list[str], per_device: int) -> tuple[threading.Thread, list[int]]:
    progress: list[int] = []
    urls = [node.url for node in nodes(settings)]

    async def all_devices() -> None:
        await asyncio.gather(*(_publish_confirmed(settings, urls[k % len(urls)], d, range(per_device), None, progress)
                               for k, d in enumerate(device_ids)))

    thread = threading.Thread(target=lambda: asyncio.run(all_devices()), daemon=True)
    thread.start()
    return thread, progress


def test_stream_leader_killed_mid_stream_then_restarted_stores_every_message_once(
        settings: Settings, db: psycopg.Connection) -> None:
    devices = [provision(settings, db).device_id for _ in range(4)]
    leader = stream_state(settings)["leader"]
    victim = [node.name for node in nodes(settings)].index(leader)
    thread, progress = _publishers(settings, devices, 5000)
    wait_until(lambda: len(progress) >= 4000, timeout=SLOW, what="publishing under way")
    stop_node(nodes(settings)[victim], sig=__import__("signal").SIGKILL)
    assert len(progress) < 20000, "the leader must die mid-stream"
    _restart(settings, victim)
    thread.join(SLOW * 2)
    assert not thread.is_alive() and len(progress) == 20000
    wait_until(lambda: stream_state(settings).get("messages") == 20000, timeout=SLOW, what="20,000 in the stream")
    with jetstream_worker(settings, 0) as w0, jetstream_worker(settings, 1) as w1:
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 20000, timeout=SLOW, what="20,000 rows")
    assert w0.counters.applied + w1.counters.applied == 20000
    assert count(db, "SELECT count(DISTINCT (device_id, msg_id)) FROM env_readings") == 20000
    assert stream_state(settings).get("messages") == 0  # work queue: every message acked once applied


def test_rolling_restart_of_all_nodes_under_load_loses_nothing(settings: Settings, db: psycopg.Connection) -> None:
    devices = [provision(settings, db).device_id for _ in range(3)]
    with jetstream_worker(settings, 0) as w0, jetstream_worker(settings, 1) as w1:
        thread, progress = _publishers(settings, devices, 3000)
        for index in range(3):
            wait_until(lambda: len(progress) > 0, timeout=SLOW, what="load")
            stop_node(nodes(settings)[index])
            _restart(settings, index)
        thread.join(SLOW * 2)
        assert not thread.is_alive() and len(progress) == 9000
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 9000, timeout=SLOW, what="9,000 rows")
    assert count(db, "SELECT count(DISTINCT (device_id, msg_id)) FROM env_readings") == 9000
    assert w0.counters.applied + w1.counters.applied == 9000


def test_a_worker_lost_mid_batch_is_redelivered_to_the_other_and_applied_once(
        settings: Settings, db: psycopg.Connection) -> None:
    """The lost worker fetched a batch, committed part of it and vanished without acking anything."""
    device_id = provision(settings, db).device_id
    thread, progress = _publishers(settings, [device_id], 1000)
    thread.join(SLOW)
    assert len(progress) == 1000
    lost = make_worker(settings, 7)
    lost.connect()
    batch: list = []
    wait_until(lambda: bool(batch.extend(lost._take()[0]) or len(batch) >= 300), timeout=SLOW, what="a batch")
    assert len(lost.apply(batch[:200]).applied) == 200  # committed, never acked; the rest not even committed
    lost.close_transport()  # gone: no ack will ever come from it
    with jetstream_worker(settings, 0) as other:
        wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 1000, timeout=SLOW, what="redelivery")
        wait_until(lambda: other.counters.duplicates >= 200, timeout=SLOW, what="the committed ones seen again")
    assert other.counters.duplicates == 200 and other.counters.applied == 800
    assert count(db, "SELECT count(DISTINCT msg_id) FROM env_readings") == 1000


def test_a_device_reconnecting_to_another_node_keeps_publishing(settings: Settings, db: psycopg.Connection) -> None:
    creds = provision(settings, db)
    now = datetime.now(UTC).isoformat()
    with mqtt_device(on_node(creds, settings, 0), settings) as d:
        for i in range(20):
            d.publish("env", {"msg_id": f"before{i}", "ts": now, "temp_c": 1})
    stop_node(nodes(settings)[0])
    try:
        with mqtt_device(on_node(creds, settings, 1), settings) as d:
            for i in range(20):
                d.publish("env", {"msg_id": f"after{i}", "ts": now, "temp_c": 2})
        with jetstream_worker(settings.model_copy(update={"nats_servers": nodes(settings)[2].url}), 0):
            wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 40, timeout=SLOW, what="40 rows")
    finally:
        if node_pid(nodes(settings)[0]) is None:
            _restart(settings, 0)


# --- a worker's host cut off from the network (network namespace + veth pair made here) --------

_LOST_WORKER = """
import sys, time
from runtime.settings import Settings
from ingest.transport import make_worker
settings = Settings.model_validate_json(sys.stdin.read())
worker = make_worker(settings, 9)
worker.connect()
batch = []
while len(batch) < 300:
    batch.extend(worker._take()[0])
print("APPLIED", len(worker.apply(batch[:200]).applied), flush=True)  # committed, not acked
time.sleep(3600)  # the host stays up; only its network goes away
"""


class _Forwarder:
    """TCP forwarding from the root-side veth address to a loopback port (the services listen there)."""

    def __init__(self, listen_host: str, targets: dict[int, int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.listen_host, self.targets = listen_host, targets
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    async def _start(self) -> None:
        self.servers = [await asyncio.start_server(lambda r, w, t=target: self._pipe_to(r, w, t), self.listen_host,
                                                   listen)
                        for listen, target in self.targets.items()]

    async def _pipe_to(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def close(self) -> None:
        # Cancel and await every pipe before the loop stops: a task left pending is destroyed at
        # interpreter exit, which pytest reports as an unraisable exception and fails the run.
        async def shutdown() -> None:
            for server in self.servers:
                server.close()
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def _isolated_host(tag: str) -> Iterator[tuple[str, str, str]]:
    """A network namespace joined to this host by a veth pair: (namespace, host-side link, host address)."""
    ns, host_link, ns_link = f"ct-{tag}", f"cth{tag}", f"ctw{tag}"
    octet = 1 + int(tag, 16) % 250
    host_addr, ns_addr = f"10.231.{octet}.1", f"10.231.{octet}.2"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_link, "type", "veth", "peer", "name", ns_link)
        _ip("link", "set", ns_link, "netns", ns)
        _ip("addr", "add", f"{host_addr}/30", "dev", host_link)
        _ip("link", "set", host_link, "up")
        _ip("-n", ns, "addr", "add", f"{ns_addr}/30", "dev", ns_link)
        _ip("-n", ns, "link", "set", ns_link, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        yield ns, host_link, host_addr
    finally:
        subprocess.run(["ip", "link", "del", host_link], capture_output=True, timeout=30, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)


def test_a_worker_host_cut_off_mid_batch_is_redelivered_to_the_other_worker_and_applied_once(
        settings: Settings, db: psycopg.Connection) -> None:
    """The worker runs in its own network namespace (its "host"); after it committed part of a batch,
    the veth link is deleted: its un-acked messages go to the other worker after ack_wait, once."""
    device_id = provision(settings, db).device_id
    thread, progress = _publishers(settings, [device_id], 1000)
    thread.join(SLOW)
    assert len(progress) == 1000
    tag = uuid.uuid4().hex[:6]
    node = nodes(settings)[2]
    db_port = int(conninfo_to_dict(settings.database_url).get("port") or 5432)
    with _isolated_host(tag) as (ns, host_link, host_addr):
        forwarder = _Forwarder(host_addr, {node.client_port: node.client_port, db_port: db_port})
        remote = settings.model_copy(update={
            "nats_servers": f"nats://{host_addr}:{node.client_port}",
            "database_url": make_conninfo(settings.database_url, host=host_addr, port=str(db_port))})
        lost = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", _LOST_WORKER], cwd=ROOT,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert lost.stdin is not None and lost.stdout is not None
            lost.stdin.write(remote.model_dump_json())
            lost.stdin.close()
            line = lost.stdout.readline()  # blocks until the batch is committed (or the worker died)
            errors = "" if line.strip() == "APPLIED 200" or lost.stderr is None else lost.stderr.read()
            assert line.strip() == "APPLIED 200", f"isolated worker: {line!r} {errors}"
            _ip("link", "del", host_link)  # the host's network is gone; the process still runs
            with jetstream_worker(settings, 0) as other:
                wait_until(lambda: count(db, "SELECT count(*) FROM env_readings") == 1000, timeout=SLOW,
                           what="the cut-off worker's messages redelivered")
                wait_until(lambda: other.counters.duplicates >= 200, timeout=SLOW, what="the committed ones again")
            assert other.counters.duplicates == 200 and other.counters.applied == 800
            assert lost.poll() is None  # it never crashed: only its network was cut
        finally:
            lost.kill()
            lost.wait(30)
            forwarder.close()
    assert count(db, "SELECT count(DISTINCT msg_id) FROM env_readings") == 1000
