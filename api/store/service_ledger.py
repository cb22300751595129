"""Posting after-sales movements (inspection dispositions, repair parts) through the ledger seam.

The API never writes ``movements`` or ``balances`` itself: it hands core's postings to ingest's
stock seam (``apply_plans`` with ``extra`` postings), which locks the keys, appends the movements
and keeps balances, serials and discrepancy alarms right, exactly as for a scan.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import psycopg

from core.ledger import Posting
from ingest.stock import Origin, apply_plans


def post(conn: psycopg.Connection, postings: Sequence[Posting], what: str) -> list[int]:
    """Append ``postings`` in the caller's transaction; their identity is one fresh message id
    (``api``, ``<what>:<uuid>``, line), so a retried request is a new decision, never a duplicate key."""
    if not postings:
        return []
    msg_id = f"{what}:{uuid.uuid4()}"
    with conn.cursor() as cur:
        return apply_plans(cur, (), extra=[(p, Origin("api", msg_id, i, "api")) for i, p in enumerate(postings)])
