"""One batch of inbound messages through every stage, inside the caller's transaction:
decode -> rules that can reject (scans against master data) -> identity claim and raw storage ->
rules' effects (movements, balances, alarms) for the messages applied for the first time."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

from core.contract import Limits, Scan
from core.ledger import Posting
from ingest.decode import Inbound, prepare
from ingest.rfid_sweep import note_gate_reads
from ingest.stock import ScanPlan, apply_plans, resolve_scans
from ingest.store import BatchResult, known_devices, write_batch
from ingest.tasks_ingest import PlannedScan, after_stock, work_scans
from ingest.telemetry_rules import apply_telemetry, shipment_refs_of
from runtime.metrics import timed_rule
from runtime.settings import Settings


@dataclass(frozen=True)
class PipelineConfig:
    prefix: str
    limits: Limits
    max_payload: int
    expiry_warning_days: int = 30

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineConfig:
        return cls(settings.topic_prefix, Limits(max_future_skew=timedelta(seconds=settings.max_future_skew_s)),
                   settings.max_payload_bytes, settings.expiry_warning_days)


def process_batch(cur: psycopg.Cursor, messages: Sequence[Inbound], config: PipelineConfig) -> BatchResult:
    prepared = prepare(messages, config.prefix, config.limits, config.max_payload,
                       lambda ids: known_devices(cur, ids))
    scans = [r for r in prepared.records if isinstance(r, Scan)]
    with timed_rule("stock_resolve"):
        plans, rule_dead, rejected = resolve_scans(cur, scans, config.prefix)
    records = [r for r in prepared.records if (r.device_id, r.msg_id) not in rejected] if rejected \
        else prepared.records
    result = write_batch(cur, records, [*prepared.dead, *rule_dead])
    refs: set[str] = set()
    if plans:
        fresh = {(r.device_id, r.msg_id) for r in result.applied if isinstance(r, Scan)}
        once: dict[tuple[str, str], ScanPlan] = {}
        for plan in plans:  # a batch may carry the same message twice (a redelivery): plan it once
            key = (plan.scan.device_id, plan.scan.msg_id)
            if key in fresh:
                once.setdefault(key, plan)
        # Orders and tasks (CONTRACT 3): a scan refused by its task moves nothing.
        planned = [PlannedScan(p.scan, p.plan if isinstance(p.plan, Posting) else None) for p in once.values()]
        refused = work_scans(cur, planned)
        if refused:
            once = {k: p for k, p in once.items() if k not in refused}
            planned = [p for p in planned if (p.scan.device_id, p.scan.msg_id) not in refused]
        with timed_rule("stock_apply"):
            apply_plans(cur, list(once.values()))
        after_stock(cur, planned, expiry_warning_days=config.expiry_warning_days)
        refs = shipment_refs_of((p.plan.ref, p.plan.biz_step) for p in once.values() if isinstance(p.plan, Posting))
    note_gate_reads(cur, result.applied)
    if result.applied:
        with timed_rule("telemetry"):
            apply_telemetry(cur, result.applied, refs, datetime.now(UTC))
    return result
