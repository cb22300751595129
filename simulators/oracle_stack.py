"""The live side of the replay oracle: a stream delivered with chaos to the real stack, then the
stored state read back as plain values, next to ``core.replay`` of the same messages.

``OracleStack`` runs what ``cargotrace run`` runs: the HTTP API (used to provision the stream's
master data and devices, as an operator would) and the ingest supervisor with two worker
processes, against a given broker and database. ``run_stream`` then

1. provisions the stream (``PUT`` master data, devices with their own broker passwords);
2. publishes the chaos-delivered messages over MQTT, each with its own device's credentials;
3. waits (polling, with a deadline) until every ``(device_id, msg_id)`` is stored or
   dead-lettered and the RFID sweep has settled (the gates silent long enough on arrival for
   every passage to close, and no new passage for a few sweeps);
4. reads the stored state (``read_state``) and replays the same messages (``core.replay``).

The supervisor runs without its wall-clock loops (offline devices, promises passing): those
rules depend on when the check runs, not on the history, and the oracle leaves them out of both
sides (``core.replay.WALL_CLOCK_ALARMS``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from psycopg import sql

from api.tokens import create_token
from cli.api_server import ApiServer
from core.coldchain import Profile
from core.geo import Circle, Fence, Polygon
from core.ledger import Location
from core.replay import (
    WALL_CLOCK_ALARMS,
    AlarmLine,
    DeviceInfo,
    EventLine,
    History,
    LedgerLine,
    MasterData,
    PassageLine,
    ReplayState,
    SerialLine,
    ShipmentLine,
    ShipmentMaster,
    TicketLine,
    first_difference,
    peak,
    replay,
)
from ingest.db import connect
from ingest.rfid_sweep import gate_config
from ingest.supervisor import Supervisor, wait_until_connected
from runtime.settings import Settings
from simulators.messages import Message
from simulators.provision import ApiClient
from simulators.streams import Chaos, Stream, chaos, decode_messages, generate, objects

SETTLE_TIMEOUT_S = 120.0
_KEEP_TABLES = {"schema_migrations"}


class OracleError(RuntimeError):
    """The stack did not take the stream (a publish refused, messages never stored)."""


# --- master data as registered -------------------------------------------------------------------


def _fence(kind: str, lat: float | None, lon: float | None, radius: float | None, coords: Any) -> Fence:
    if kind == "circle":
        assert lat is not None and lon is not None and radius is not None  # the table's CHECK
        return Circle(lat, lon, radius)
    return Polygon(tuple((float(p[0]), float(p[1])) for p in coords))


def load_master(conn: psycopg.Connection) -> MasterData:
    """The registered master data, in the replay's types."""
    locations = {r[0]: Location(r[0], r[1], r[2]) for r in conn.execute("SELECT code, site, type FROM locations")}
    items = {str(r[0]).strip(): r[1] for r in conn.execute("SELECT gtin, sku FROM items WHERE gtin IS NOT NULL")}
    item_profiles: dict[str, str | None] = {r[0]: r[1] for r in conn.execute("SELECT sku, profile FROM items")}
    devices = {}
    for device_id, kind, site, location, mode, vehicle, profile, gate in conn.execute(
            "SELECT device_id, kind, site, location, mode, vehicle, profile, gate FROM devices"):
        devices[device_id] = DeviceInfo(device_id, kind, site, location, mode, vehicle, profile,
                                        gate_config(gate) if gate else None)
    fences = {r[0]: _fence(r[1], r[2], r[3], r[4], r[5]) for r in conn.execute(
        "SELECT code, type, lat, lon, radius_m, coordinates FROM geofences")}
    profiles = {r[0]: Profile(r[1], r[2], r[3], r[4], float(r[5]), float(r[6]),
                              None if r[7] is None else float(r[7])) for r in conn.execute(
        "SELECT code, temp_min_c, temp_max_c, rh_min_pct, rh_max_pct, delay_s, hysteresis_c, cumulative_s "
        "FROM profiles")}
    shipments = {}
    for ref, origin, destination, customer, vehicle, promised, profile, lines, cancelled, fence in conn.execute(
            "SELECT s.ref, s.origin, s.destination, s.customer, s.vehicle, s.promised_at, s.profile, s.lines, "
            "s.cancelled_at, site.geofence FROM shipments s JOIN locations o ON o.code = s.origin "
            "JOIN sites site ON site.code = o.site"):
        shipments[ref] = ShipmentMaster(ref, origin, destination, customer, vehicle, fence, promised, cancelled,
                                        profile, tuple(item_profiles.get(line["sku"]) for line in lines))
    return MasterData(locations, items, devices, shipments, fences, profiles)


# --- the stored state ----------------------------------------------------------------------------


def _d(value: Any) -> Decimal:
    return Decimal(value).normalize() + Decimal(0)  # normalize() keeps -0; + 0 makes it 0


def read_state(conn: psycopg.Connection) -> ReplayState:
    """The stored derived state as plain comparable values; ids and wall-clock columns left out."""
    ledger = tuple(sorted(
        LedgerLine(r[0], r[1], _d(r[2]), r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                   None if r[12] == "rfid" else r[11], r[12])
        for r in conn.execute(
            "SELECT ts, sku, qty, from_location, to_location, lot, serial, expiry, biz_step, ref, device_id, "
            "msg_id, source FROM movements m WHERE reverses IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM movements r WHERE r.reverses = m.id)")))
    balances = {(r[0], r[1], r[2]): _d(r[3]) for r in conn.execute(
        "SELECT sku, location, lot, qty FROM balances WHERE qty <> 0")}
    serials = {(r[0], r[1]): SerialLine(r[2], r[3], r[4]) for r in conn.execute(
        "SELECT sku, serial, location, lot, ts FROM serials")}
    passages = tuple(sorted(PassageLine(*r) for r in conn.execute(
        "SELECT gate, epc, first_ts, last_ts, direction, reason, reads, movement IS NOT NULL FROM rfid_passages")))
    positions = {(r[0], r[1]): r[2] for r in conn.execute("SELECT device_id, msg_id, filter_reason FROM positions")}
    events: dict[str, list[EventLine]] = {}
    for ref, type_, ts, detail in conn.execute(
            "SELECT shipment, type, ts, detail FROM shipment_events WHERE type NOT IN ('delayed')"):
        events.setdefault(ref, []).append(EventLine(type_, ts, detail))
    shipments = {r[0]: ShipmentLine(r[1], bool(r[2]), r[3], tuple(sorted(events.get(r[0], [])))) for r in conn.execute(
        "SELECT s.ref, s.status, coalesce(st.delayed, false), st.delivered_at FROM shipments s "
        "LEFT JOIN shipment_state st ON st.ref = s.ref")}
    alarm_rows = conn.execute(
        "SELECT id, type, subject, started_at, cleared_at, state, device_id, shipment, peak_value FROM alarms "
        "WHERE NOT (type = ANY(%s)) AND state <> 'withdrawn'", (sorted(WALL_CLOCK_ALARMS),)).fetchall()
    alarms = {r[0]: AlarmLine(r[1], r[2], r[3], r[4], r[5], r[6], r[7], peak(r[8])) for r in alarm_rows}
    tickets = tuple(sorted((TicketLine(r[0], r[1], r[2], None if r[3] is None or r[3] not in alarms else
                                       (alarms[r[3]].type, alarms[r[3]].subject, alarms[r[3]].started_at), r[4])
                            for r in conn.execute(
                                "SELECT t.type, t.cause, t.shipment, t.alarm_id, t.status FROM tickets t "
                                "LEFT JOIN alarms a ON a.id = t.alarm_id WHERE a.state IS DISTINCT FROM 'withdrawn'")),
                           key=repr))
    return ReplayState(ledger, balances, serials, passages, positions, shipments, tuple(sorted(alarms.values())),
                       tickets)


def truncate_all(conn: psycopg.Connection) -> None:
    tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
              if r[0] not in _KEEP_TABLES]
    if tables:
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in tables)))


# --- delivery ------------------------------------------------------------------------------------


def publish_all(settings: Settings, passwords: dict[str, str], messages: Sequence[Message],
                on_progress: Callable[[int], None] | None = None) -> None:
    """Every message at QoS 1 on its own device's connection (its own credentials), in the given
    order; returns once the broker acknowledged all of them."""
    clients: dict[str, mqtt.Client] = {}
    try:
        for device_id in sorted({m.device_id for m in messages}):
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id,  # the only id its account may use
                                 protocol=mqtt.MQTTv5)
            client.username_pw_set(device_id, passwords[device_id])
            client.max_inflight_messages_set(100)
            client.connect(settings.mqtt_host, settings.mqtt_port)
            client.loop_start()
            clients[device_id] = client
        infos = []
        for i, m in enumerate(messages):
            topic = f"{settings.topic_prefix}/dev/{m.device_id}/{m.kind}"
            infos.append((topic, clients[m.device_id].publish(topic, m.payload, qos=1)))
            if on_progress is not None and i % 100 == 0:
                on_progress(i)
        for topic, info in infos:
            info.wait_for_publish(timeout=60)
            if not info.is_published():
                raise OracleError(f"the broker did not acknowledge a publish to {topic}")
        if on_progress is not None:
            on_progress(len(messages))
    finally:
        for client in clients.values():
            client.disconnect()
            client.loop_stop()


def _stored_identities(conn: psycopg.Connection, devices: list[str]) -> set[tuple[str, str]]:
    found = {(r[0], r[1]) for r in conn.execute(
        "SELECT device_id, msg_id FROM message_ids WHERE device_id = ANY(%s)", (devices,))}
    for device_id, payload in conn.execute("SELECT device_id, payload FROM dead_letters WHERE device_id = ANY(%s)",
                                           (devices,)):
        try:
            value = orjson.loads(bytes(payload))
        except orjson.JSONDecodeError:
            continue
        for obj in value if isinstance(value, list) else [value]:
            if isinstance(obj, dict) and isinstance(obj.get("msg_id"), str):
                found.add((device_id, obj["msg_id"]))
    return found


def identities(messages: Iterable[Message]) -> set[tuple[str, str]]:
    return {(m.device_id, str(obj["msg_id"])) for m in messages for obj in objects(m)}


def wait_stored(conn: psycopg.Connection, messages: Sequence[Message], timeout: float = SETTLE_TIMEOUT_S) -> None:
    """Every object of the messages stored or dead-lettered (their transactions committed)."""
    wanted = identities(messages)
    devices = sorted({m.device_id for m in messages})
    deadline = time.monotonic() + timeout
    while True:
        missing = wanted - _stored_identities(conn, devices)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise OracleError(f"{len(missing)} of {len(wanted)} messages neither stored nor dead-lettered after "
                              f"{timeout:.0f} s, e.g. {sorted(missing)[0]}")
        time.sleep(0.2)


def wait_rfid_settled(conn: psycopg.Connection, settings: Settings, published_at: float,
                      timeout: float = SETTLE_TIMEOUT_S) -> None:
    """A gate's passages all close once it has been silent on arrival for ``absent_after_s`` (6 s
    by default); then wait for a few sweeps without a new or changed passage."""
    deadline = time.monotonic() + timeout
    gates = _gates(conn)
    quiet = max(float(gate_config(g).absent_after_s) for g in gates) if gates else 0.0
    while time.monotonic() < published_at + quiet + 2 * settings.rfid_sweep_interval_s:
        time.sleep(0.2)
    last: object = None
    stable_since = time.monotonic()
    while True:
        now = conn.execute("SELECT count(*), max(last_ts), count(movement) FROM rfid_passages").fetchone()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 4 * settings.rfid_sweep_interval_s + 1:
            return
        if time.monotonic() > deadline:
            raise OracleError("the RFID passages did not settle")
        time.sleep(0.2)


def _gates(conn: psycopg.Connection) -> list[Any]:
    return [r[0] for r in conn.execute("SELECT gate FROM devices WHERE kind = 'rfid_gate' AND gate IS NOT NULL")]


def _report_published(on_progress: Callable[[str, int, int], None], before: int, total: int, n: int) -> None:
    on_progress("published", before + n, total)


# --- the whole run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    stream: Stream
    delivered: int  # messages published after the chaos
    stored: ReplayState
    replayed: ReplayState
    difference: str | None


class OracleStack:
    """The API and two ingest worker processes on the given broker and (migrated) database."""

    def __init__(self, settings: Settings, workers: int = 2) -> None:
        self.settings = settings.model_copy(update={"ingest_workers": workers})
        self.workers = workers
        self.api = ApiServer(self.settings)
        self.supervisor = Supervisor(self.settings, workers, maintain=False)
        self._thread = threading.Thread(target=self.supervisor.run, name="oracle-supervisor", daemon=True)

    def __enter__(self) -> OracleStack:
        self.api.start()
        self._thread.start()
        wait_until_connected(self.settings, self.workers, timeout=60)
        return self

    def __exit__(self, *_: object) -> None:
        self.supervisor.request_stop()
        self._thread.join(30)
        self.api.stop()

    def run_stream(self, seed: int, *, tag: str | None = None, trucks: int | None = None,
                   chaos_config: Chaos | None = None,
                   deliver: Callable[[Stream, int], Sequence[Sequence[Message]]] | None = None,
                   on_progress: Callable[[str, int, int], None] | None = None) -> Outcome:
        """One stream end to end on an emptied database. ``deliver`` replaces the default chaos
        (the domain-targeted cases shape it): it returns phases, each published and stored before
        the next one is published (late data that finds the earlier data committed)."""
        stream = generate(seed, tag=tag or f"o{uuid.uuid4().hex[:9]}", trucks=trucks)
        phases = deliver(stream, seed) if deliver is not None else [chaos(stream.messages, seed,
                                                                          chaos_config or Chaos())]
        delivered = [m for phase in phases for m in phase]
        with connect(self.settings.database_url, autocommit=True) as conn:
            truncate_all(conn)
            token = create_token(conn, "admin", "replay oracle")
            with ApiClient(f"http://{self.settings.api_host}:{self.settings.api_port}", token) as api:
                api.put_all(stream.master)
                passwords = api.device_passwords(stream.devices)
            received_at = datetime.now(UTC)
            done = 0
            for phase in phases:
                publish_all(self.settings, passwords, phase, None if on_progress is None else
                            partial(_report_published, on_progress, done, len(delivered)))
                wait_stored(conn, phase)
                done += len(phase)
            if any(m.kind == "rfid" for m in delivered):
                wait_rfid_settled(conn, self.settings, time.monotonic())
            stored = read_state(conn)
            master = load_master(conn)
        records = decode_messages(delivered, self.settings.topic_prefix, received_at)
        replayed = replay(History(master, tuple(records), datetime.now(UTC)))
        return Outcome(stream, len(delivered), stored, replayed, first_difference(stored, replayed))
