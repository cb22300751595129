"""Live state of shipments (position, ETA, events, temperature) for ``shape_shipment``.

For now every shipment is untracked; the tracking work replaces ``live_states`` with queries over
positions, shipment events and env readings. It takes many records so a list page costs one query.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg

from api.store.records import Row
from api.views.shipments import NOT_TRACKED, ShipmentLive


def live_states(conn: psycopg.Connection, records: Sequence[Row]) -> dict[str, ShipmentLive]:
    return {str(r["ref"]): NOT_TRACKED for r in records}
