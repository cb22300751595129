"""The replay oracle: the whole derived state from a history of messages, by composition only.

``replay(history)`` sorts and de-duplicates the decoded contract records by ``(device_id,
msg_id)``, plans every scan with ``core.ledger.plan_scan`` and every RFID passage with
``core.rfid.passages``, derives the stock with ``core.stock_rules.derive_stock`` and the
telemetry with ``core.telemetry_rules.derive_telemetry`` (given the stock side's net ship and
deliver scans), and returns the state in the shape of a stored snapshot (``ReplayState``). It
holds no rule of its own: if the live platform and ``replay`` disagree, one of the rule functions
(or the way ingest applies them) is wrong, not this module.

``first_difference`` compares two states field by field and names the first difference in words
that a person can act on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from core.coldchain import Profile
from core.contract import EnvReading, Position, Record, Rfid, Scan, Status
from core.epc import Epc, EpcError, decode_epc
from core.geo import Fence
from core.gs1 import ScanCode, ScanCodeError, interpret
from core.ledger import (
    CountRequest,
    Location,
    Posting,
    ScanFacts,
    ScanRejectedError,
    ShipmentInfo,
    plan_scan,
)
from core.rfid import GateConfig, Passage, Read, passage_posting, passage_reason, passages
from core.stock_rules import Identity, PlannedCount, PlannedPosting, StockHistory, StockState, derive_stock
from core.telemetry_rules import (
    DeviceRow,
    EnvAlarm,
    EnvRow,
    MovementTime,
    PositionRow,
    ShipmentRow,
    StatusRow,
    TelemetryHistory,
    alarm_subject,
    derive_telemetry,
)

SITE_ROLE_TYPES = ("supplier", "staging", "returns", "customer", "inventory_loss")

# --- the history -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    device_id: str
    kind: str
    site: str | None = None
    location: str | None = None
    mode: str | None = None
    vehicle: str | None = None
    profile: str | None = None
    gate: GateConfig | None = None


@dataclass(frozen=True, slots=True)
class ShipmentMaster:
    ref: str
    origin: str
    destination: str  # geofence code
    customer: str
    vehicle: str
    origin_fence: str | None = None  # the origin site's yard geofence code
    promised_at: datetime | None = None
    cancelled_at: datetime | None = None
    profile: str | None = None
    line_profiles: tuple[str | None, ...] = ()  # the items' profiles, in line order


@dataclass(frozen=True, slots=True)
class MasterData:
    """The master data the rules look things up in (as registered, not derived)."""

    locations: Mapping[str, Location] = field(default_factory=dict)
    items_by_gtin: Mapping[str, str] = field(default_factory=dict)  # GTIN-14 -> sku
    devices: Mapping[str, DeviceInfo] = field(default_factory=dict)
    shipments: Mapping[str, ShipmentMaster] = field(default_factory=dict)
    geofences: Mapping[str, Fence] = field(default_factory=dict)
    profiles: Mapping[str, Profile] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class History:
    """Master data and every decoded record, in any order, duplicates allowed. ``now`` is the
    wall clock of the comparison: only the delay rule (a promise passing) depends on it."""

    master: MasterData
    records: tuple[Record, ...]
    now: datetime


# --- the state (the same shape as a snapshot of the stored state) ---------------------------------


@dataclass(frozen=True, slots=True, order=True)
class LedgerLine:
    """One net movement (neither reversed nor a reversal). ``msg_id`` is None for RFID movements,
    whose stored identity is an arbitrary passage id; the passage itself is compared in ``passages``."""

    ts: datetime
    sku: str
    qty: Decimal
    from_location: str
    to_location: str
    lot: str | None
    serial: str | None
    expiry: date | None
    biz_step: str
    ref: str | None
    device_id: str | None
    msg_id: str | None
    source: str  # scan, count, rfid


@dataclass(frozen=True, slots=True, order=True)
class SerialLine:
    location: str
    lot: str | None
    ts: datetime


@dataclass(frozen=True, slots=True, order=True)
class PassageLine:
    gate: str
    epc: str
    first_ts: datetime
    last_ts: datetime
    direction: str | None
    reason: str | None
    reads: int
    moved: bool


@dataclass(frozen=True, slots=True, order=True)
class EventLine:
    type: str
    ts: datetime
    detail: str


@dataclass(frozen=True, slots=True)
class ShipmentLine:
    status: str
    delayed: bool
    delivered_at: datetime | None
    events: tuple[EventLine, ...]


@dataclass(frozen=True, slots=True, order=True)
class AlarmLine:
    type: str
    subject: str
    started_at: datetime
    cleared_at: datetime | None
    state: str
    device_id: str | None
    shipment: str | None
    peak_value: float | None  # rounded to 6 decimals: stored as double precision


@dataclass(frozen=True, slots=True, order=True)
class TicketLine:
    type: str
    cause: str | None
    shipment: str | None
    alarm: tuple[str, str, datetime] | None  # (type, subject, started_at) of the alarm it is about
    status: str


@dataclass(frozen=True, slots=True)
class ReplayState:
    ledger: tuple[LedgerLine, ...]
    balances: Mapping[tuple[str, str, str], Decimal]  # non-zero only
    serials: Mapping[tuple[str, str], SerialLine]
    passages: tuple[PassageLine, ...]
    positions: Mapping[tuple[str, str], str | None]  # (device_id, msg_id) -> why filtered out, None if kept
    shipments: Mapping[str, ShipmentLine]
    alarms: tuple[AlarmLine, ...]
    tickets: tuple[TicketLine, ...]


def peak(value: float | Decimal | None) -> float | None:
    return None if value is None else round(float(value), 6)


# --- comparing -------------------------------------------------------------------------------------


def first_difference(stored: ReplayState, replayed: ReplayState) -> str | None:
    """The first field in which the two states differ, described; None when they are equal."""
    for f in fields(ReplayState):
        a, b = getattr(stored, f.name), getattr(replayed, f.name)
        if a == b:
            continue
        if isinstance(a, Mapping):
            return _mapping_difference(f.name, a, b)
        return _sequence_difference(f.name, a, b)
    return None


def _mapping_difference(name: str, stored: Mapping[Any, Any], replayed: Mapping[Any, Any]) -> str:
    for key in sorted(set(stored) | set(replayed), key=repr):
        a, b = stored.get(key), replayed.get(key)
        if a != b:
            return f"{name}[{key!r}]: stored {a!r}, replay {b!r}"
    raise AssertionError("unequal mappings with equal items")  # pragma: no cover


def _sequence_difference(name: str, stored: Sequence[Any], replayed: Sequence[Any]) -> str:
    only_stored = [x for x in stored if x not in replayed]
    only_replay = [x for x in replayed if x not in stored]
    parts = [f"{name}: {len(stored)} stored, {len(replayed)} in the replay"]
    if only_stored:
        parts.append(f"first only in stored: {only_stored[0]!r}")
    if only_replay:
        parts.append(f"first only in replay: {only_replay[0]!r}")
    if not only_stored and not only_replay:
        parts.append("same lines, different multiplicity")
    return "; ".join(parts)


# --- replay ----------------------------------------------------------------------------------------


def unique_records(records: Iterable[Record]) -> list[Record]:
    """Sorted by event time then identity; one record per (device_id, msg_id)."""
    seen: dict[tuple[str, str], Record] = {}
    for r in records:
        seen.setdefault((r.device_id, r.msg_id), r)
    return sorted(seen.values(), key=lambda r: (r.ts, r.device_id, r.msg_id))


@dataclass(frozen=True, slots=True)
class _ScanInput:
    scan: Scan
    code: ScanCode
    facts: ScanFacts


def _facts(master: MasterData, scan: Scan, code: ScanCode, serial_location: str | None) -> ScanFacts:
    """What the scan refers to, looked up in the master data (what ingest's resolve_scans does)."""
    device = master.devices.get(scan.device_id)
    gtin = code.gtin or code.content_gtin
    shipment = master.shipments.get(scan.ref) if scan.ref else None
    by_type: dict[tuple[str, str], list[str]] = {}
    for loc in sorted(master.locations.values(), key=lambda loc: loc.code):
        if loc.type in SITE_ROLE_TYPES:
            by_type.setdefault((loc.site, loc.type), []).append(loc.code)
    return ScanFacts(
        device_kind=device.kind if device else "unknown",
        device_location=device.location if device else None,
        device_mode=device.mode if device else None,
        sku=master.items_by_gtin.get(gtin) if gtin else None,
        locations=master.locations,
        by_type_in_site={k: tuple(v) for k, v in by_type.items()},
        shipment=None if shipment is None else ShipmentInfo(shipment.ref, shipment.vehicle, shipment.customer,
                                                            shipment.origin,
                                                            "cancelled" if shipment.cancelled_at else "planned"),
        serial_location=serial_location)


def _plan(scan: Scan, code: ScanCode, facts: ScanFacts) -> Posting | CountRequest | None:
    """The scan's posting or count; None for a dead letter (live and in the replay) and for any
    other plan (a return still waiting for its serial's delivery books nothing)."""
    try:
        plan = plan_scan(scan, code, facts)
    except ScanRejectedError:
        return None
    return plan if isinstance(plan, Posting | CountRequest) else None


def plan_scans(master: MasterData, scans: Sequence[Scan],
               serial_location: Callable[[str, str, datetime], str | None]) -> tuple[
        list[PlannedPosting], list[PlannedCount]]:
    """Every scan planned; ``serial_location(sku, serial, ts)`` says where a serial is just before
    ``ts`` (a return is booked from there)."""
    postings: list[PlannedPosting] = []
    counts: list[PlannedCount] = []
    for scan in scans:
        try:
            code = interpret(scan.code)
        except ScanCodeError:
            continue
        gtin = code.gtin or code.content_gtin
        sku = master.items_by_gtin.get(gtin) if gtin else None
        where = serial_location(sku, code.serial, scan.ts) if sku and code.serial else None
        plan = _plan(scan, code, _facts(master, scan, code, where))
        identity = Identity(scan.device_id, scan.msg_id)
        if isinstance(plan, Posting):
            postings.append(PlannedPosting(plan, identity))
        elif isinstance(plan, CountRequest):
            counts.append(PlannedCount(plan, identity))
    return postings, counts


@dataclass(frozen=True, slots=True)
class GatePassage:
    gate: str
    passage: Passage
    sku: str | None
    serial: str | None
    reason: str | None


def gate_passages(master: MasterData, rfid: Sequence[Rfid]) -> list[GatePassage]:
    """Every passage of every gate, all final (the replay has seen every read)."""
    reads: dict[str, list[Read]] = {}
    for message in rfid:
        reads.setdefault(message.device_id, []).extend(Read(r.epc, r.antenna, r.rssi, r.ts) for r in message.reads)
    out: list[GatePassage] = []
    for gate, gate_reads in sorted(reads.items()):
        device = master.devices.get(gate)
        if device is None or device.gate is None:
            continue
        for p in passages(gate_reads, device.gate):
            try:
                epc: Epc | None = decode_epc(p.epc)
            except EpcError:
                epc = None
            sku = master.items_by_gtin.get(epc.gtin) if epc is not None and epc.gtin else None
            out.append(GatePassage(gate, p, sku, epc.serial if epc is not None else None,
                                   passage_reason(p, epc.scheme if epc is not None else None, sku)))
    return out


def gate_posting(gp: GatePassage) -> PlannedPosting | None:
    posting = passage_posting(gp.passage, gp.sku, gp.serial, gp.reason)
    if posting is None:
        return None
    return PlannedPosting(posting, Identity(gp.gate, f"passage:{gp.passage.epc}:{gp.passage.first_ts.isoformat()}"))


def derive_stock_of(master: MasterData, records: Sequence[Record]) -> tuple[StockState, list[GatePassage]]:
    scans = [r for r in records if isinstance(r, Scan)]
    gps = gate_passages(master, [r for r in records if isinstance(r, Rfid)])
    rfid_postings = [pp for pp in map(gate_posting, gps) if pp is not None]
    locations = {code: loc.type for code, loc in master.locations.items()}
    # Returns are booked from where their serial was delivered, so they are planned against the
    # stock derived from every other scan and passage (a return never moves a delivered serial
    # before the return itself).
    others = [s for s in scans if (s.mode or _device_mode(master, s)) != "return"]
    postings, counts = plan_scans(master, others, lambda sku, serial, ts: None)
    base = derive_stock(StockHistory.of([*postings, *rfid_postings], counts, locations))

    def serial_before(sku: str, serial: str, ts: datetime) -> str | None:
        before = [pp for pp in base.ledger if pp.posting.ts < ts]
        at = derive_stock(StockHistory.of(before, (), locations)).serials.get((sku, serial))
        return at.location if at else None

    returns = [s for s in scans if s not in others]
    return_postings, _ = plan_scans(master, returns, serial_before)
    state = derive_stock(StockHistory.of([*postings, *return_postings, *rfid_postings], counts, locations))
    return state, gps


def _device_mode(master: MasterData, scan: Scan) -> str | None:
    device = master.devices.get(scan.device_id)
    return device.mode if device else None


def _ledger_lines(state: StockState, counts: set[Identity], rfid_gates: set[str]) -> tuple[LedgerLine, ...]:
    lines = []
    for pp in state.ledger:
        p, ident = pp.posting, pp.identity
        rfid = ident.msg_id.startswith("passage:") and ident.device_id in rfid_gates
        source = "rfid" if rfid else ("count" if ident in counts else "scan")
        lines.append(LedgerLine(p.ts, p.sku, p.qty, p.from_location, p.to_location, p.lot, p.serial, p.expiry,
                                p.biz_step, p.ref, ident.device_id, None if rfid else ident.msg_id, source))
    return tuple(sorted(lines))


def stock_state_lines(state: StockState, gps: Sequence[GatePassage]) -> tuple[
        tuple[LedgerLine, ...], dict[tuple[str, str, str], Decimal], dict[tuple[str, str], SerialLine],
        tuple[PassageLine, ...]]:
    gates = {gp.gate for gp in gps}
    ledger = _ledger_lines(state, set(state.adjustments), gates)
    balances = {k: v for k, v in state.balances.items() if v != 0}
    serials = {k: SerialLine(v.location, v.lot, v.ts) for k, v in state.serials.items()}
    passage_lines = tuple(sorted(
        PassageLine(gp.gate, gp.passage.epc, gp.passage.first_ts, gp.passage.last_ts, gp.passage.direction,
                    gp.reason, gp.passage.reads, gate_posting(gp) is not None) for gp in gps))
    return ledger, balances, serials, passage_lines


def replay(history: History) -> ReplayState:
    """The whole derived state of ``history``; see the module docstring."""
    records = unique_records(history.records)
    stock, gps = derive_stock_of(history.master, records)
    ledger, balances, serials, passage_lines = stock_state_lines(stock, gps)
    positions, shipments, alarms, tickets = derive_telemetry_lines(history, records, stock)
    return ReplayState(ledger, balances, serials, passage_lines, positions, shipments, alarms, tickets)


# Alarm types decided by the wall clock (a device silent *now*, a promise passing *now*), not by
# the history: the oracle leaves them out of both sides.
WALL_CLOCK_ALARMS = frozenset({"device_offline", "shipment_delayed"})


def telemetry_history(history: History, records: Sequence[Record], stock: StockState) -> TelemetryHistory:
    master = history.master
    movements = tuple(MovementTime(pp.posting.ref, pp.posting.biz_step, pp.posting.ts) for pp in stock.ledger
                      if pp.posting.ref is not None and pp.posting.biz_step in ("loading", "arriving"))
    return TelemetryHistory(
        now=history.now,
        devices=tuple(DeviceRow(d.device_id, d.kind, d.vehicle, d.profile) for d in master.devices.values()),
        positions=tuple(PositionRow(r.device_id, r.ts, r.msg_id, r.lat, r.lon, r.fix_valid, r.speed_kmh,
                                    r.received_at) for r in records if isinstance(r, Position)),
        env=tuple(EnvRow(r.device_id, r.ts, r.temp_c, r.rh_pct, r.probe) for r in records
                  if isinstance(r, EnvReading)),
        statuses=tuple(StatusRow(r.device_id, r.ts, r.battery_pct) for r in records if isinstance(r, Status)),
        shipments=tuple(ShipmentRow(s.ref, s.vehicle, s.destination, s.origin_fence, s.promised_at, s.cancelled_at,
                                    s.profile, s.line_profiles) for s in master.shipments.values()),
        movements=movements, geofences=master.geofences, profiles=master.profiles)


def derive_telemetry_lines(history: History, records: Sequence[Record], stock: StockState) -> tuple[
        dict[tuple[str, str], str | None], dict[str, ShipmentLine], tuple[AlarmLine, ...], tuple[TicketLine, ...]]:
    """Shipments, alarms and tickets: ``derive_telemetry`` of the records and the stock side's net
    ship/deliver times, plus the stock side's discrepancy episodes."""
    state = derive_telemetry(telemetry_history(history, records, stock))
    shipments = {ref: ShipmentLine(o.state.status, o.delayed, o.delivered_at,
                                   tuple(sorted(EventLine(e.type, e.ts, e.detail) for e in o.state.events)))
                 for ref, o in state.shipments.items()}
    alarms = [env_alarm_line(a) for a in state.env_alarms]
    alarms += [AlarmLine("battery_low", b.device_id, b.started_at, b.cleared_at,
                         "active" if b.cleared_at is None else "cleared", b.device_id, None, peak(b.peak_value))
               for b in state.battery_alarms]
    alarms += [AlarmLine("stock_discrepancy", "|".join(e.key), e.start, e.end,
                         "active" if e.end is None else "cleared", None, None, peak(e.peak))
               for e in stock.discrepancies]
    tickets = [TicketLine("logistics_exception", t.cause, t.shipment,
                          None if t.alarm is None else _alarm_key(env_alarm_line(t.alarm)), "open")
               for t in state.tickets]
    positions = {(device_id, msg_id): reason for (device_id, _, msg_id), reason in state.position_reasons.items()}
    return positions, shipments, tuple(sorted(alarms)), tuple(sorted(tickets, key=repr))


def env_alarm_line(a: EnvAlarm) -> AlarmLine:
    return AlarmLine(a.type, alarm_subject(a.device_id, a.probe), a.started_at, a.cleared_at,
                     "active" if a.cleared_at is None else "cleared", a.device_id, a.shipment, peak(a.peak_value))


def _alarm_key(a: AlarmLine) -> tuple[str, str, datetime]:
    return (a.type, a.subject, a.started_at)
