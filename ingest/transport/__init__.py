"""The ingest side of the broker seam: an ingest worker for the broker that runs (``CARGOTRACE_BROKER``).

Mosquitto: MQTT 5 shared subscription, PUBACK after commit (ingest/worker.py). NATS: a durable
JetStream pull consumer, ack after commit (ingest/transport/nats.py). Both apply a batch in one
transaction, so everything above the worker's receive/ack (pipeline, store, rules) is shared.
"""

from __future__ import annotations

from ingest.worker import IngestWorker
from runtime.settings import Settings


def make_worker(settings: Settings, index: int = 0) -> IngestWorker:
    if settings.broker == "nats":
        from ingest.transport.nats import JetStreamWorker

        return JetStreamWorker(settings, index)
    return IngestWorker(settings, index)


def prepare_ingest(settings: Settings, workers: int) -> None:
    """Make the broker keep what devices publish before the workers first run (sessions or stream)."""
    if settings.broker == "nats":
        from ingest.transport.nats import ensure_stream

        ensure_stream(settings)
        return
    from ingest.worker import ensure_sessions

    ensure_sessions(settings, workers)
