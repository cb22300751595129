"""Re-applying dead letters once the cause is fixed (an item created after its first scan, a
device registered late). Each letter goes through the same pipeline as a live message, with its
original receive time; the letter is marked with the outcome, never deleted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import psycopg

from core.contract import Scan
from ingest.decode import Inbound, prepare
from ingest.pipeline import PipelineConfig, process_batch
from ingest.stock import resolve_scans
from ingest.store import known_devices

# Reasons that no change of master data can cure: replaying them would only fail again.
FINAL_REASONS = frozenset({"invalid_json", "payload_too_large", "invalid_topic", "not_an_object", "empty_array",
                           "duplicate_in_payload"})


@dataclass(frozen=True)
class ReplayResult:
    letter_id: int
    outcome: str  # "applied", "duplicate", or "rejected: <reason>"


def _still_rejected(cur: psycopg.Cursor, message: Inbound, config: PipelineConfig) -> str | None:
    prepared = prepare([message], config.prefix, config.limits, config.max_payload, lambda i: known_devices(cur, i))
    if prepared.dead:
        return prepared.dead[0].reason
    scans = [r for r in prepared.records if isinstance(r, Scan)]
    _, dead, _ = resolve_scans(cur, scans, config.prefix)
    return dead[0].reason if dead else None


def replay(conn: psycopg.Connection, config: PipelineConfig, *, reason: str | None = None,
           device: str | None = None, limit: int = 10_000) -> list[ReplayResult]:
    rows: Sequence[tuple[int, str, bytes, datetime]] = conn.execute(
        "SELECT id, topic, payload, received_at FROM dead_letters WHERE replayed_at IS NULL "
        "AND NOT (reason = ANY(%s)) AND (%s::text IS NULL OR reason = %s) AND (%s::text IS NULL OR device_id = %s) "
        "ORDER BY received_at, id LIMIT %s",
        (sorted(FINAL_REASONS), reason, reason, device, device, limit)).fetchall()
    results = []
    for letter_id, topic, payload, received_at in rows:
        message = Inbound(topic, bytes(payload), received_at)
        with conn.transaction(), conn.cursor() as cur:
            why = _still_rejected(cur, message, config)
            if why is not None:
                outcome = f"rejected: {why}"
                cur.execute("UPDATE dead_letters SET replay_result = %s WHERE id = %s", (outcome, letter_id))
            else:
                result = process_batch(cur, [message], config)
                outcome = "applied" if result.applied else "duplicate"
                cur.execute("UPDATE dead_letters SET replayed_at = now(), replay_result = %s WHERE id = %s",
                            (outcome, letter_id))
        results.append(ReplayResult(letter_id, outcome))
    return results
