"""Prometheus metrics of the ingest workers and the API (issue 14 point 9), official prometheus_client.

Every ingest worker process serves its own ``/metrics`` (``CARGOTRACE_INGEST_METRICS_PORT`` + the
worker's index; 0 turns it off) rather than prometheus_client's multiprocess mode: workers are
independent processes that may run on different hosts, each one a Prometheus target of its own,
and per-process gauges (in-flight messages) need no shared directory or aggregation rules. The
worker label (its MQTT client id) also keeps workers apart that share one process (the tests).
The API serves ``/metrics`` beside ``/api/v1``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from core.contract import KINDS

log = logging.getLogger("cargotrace.metrics")

RECEIVED = Counter("cargotrace_ingest_messages_received", "Messages taken from the broker for storing "
                   "(a redelivery counts again)", ["worker"])
APPLIED = Counter("cargotrace_ingest_messages_applied", "Records stored for the first time", ["worker"])
DUPLICATES = Counter("cargotrace_ingest_duplicates", "Records already stored (redeliveries, device resends)",
                     ["worker"])
DEAD_LETTERS = Counter("cargotrace_ingest_dead_letters", "Messages or elements stored as dead letters",
                       ["worker", "reason", "kind"])
BATCH_SIZE = Histogram("cargotrace_ingest_batch_size", "Messages per committed batch", ["worker"],
                       buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 4000, 8000))
COMMIT_SECONDS = Histogram("cargotrace_ingest_batch_commit_seconds", "From taking a batch to its commit "
                           "(retries of a transient failure included)", ["worker"],
                           buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
IN_FLIGHT = Gauge("cargotrace_ingest_in_flight_messages", "Messages received and not yet acknowledged "
                  "(queued in the worker or in the batch being committed)", ["worker"])
UNACKED_BYTES = Gauge("cargotrace_ingest_unacked_bytes", "Payload bytes received and not yet acknowledged",
                      ["worker"])
CONNECTIONS = Counter("cargotrace_ingest_broker_connections", "Broker sessions opened (each re-subscribes)",
                      ["worker"])
# Hook for the NATS transport: messages in the durable stream not yet delivered to this consumer
# (JetStream ConsumerInfo.num_pending). The transport sets it; Mosquitto has no equivalent.
CONSUMER_LAG = Gauge("cargotrace_ingest_consumer_lag_messages", "Messages pending for the durable consumer "
                     "(NATS JetStream only)", ["worker"])
RULE_SECONDS = Histogram("cargotrace_rule_seconds", "Time spent in a rule's evaluation and its effects per batch",
                         ["rule"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
EVENT_STREAM_CLIENTS = Gauge("cargotrace_api_event_stream_clients", "Open /events/stream connections of this "
                             "API process")


def kind_label(topic: str) -> str:
    """The topic's message kind, or "other": a device chooses its topic, so labels stay bounded."""
    kind = topic.rsplit("/", 1)[-1]
    return kind if kind in KINDS else "other"


@contextmanager
def timed_rule(rule: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        RULE_SECONDS.labels(rule=rule).observe(time.perf_counter() - started)


def serve_worker_metrics(base_port: int, index: int, host: str) -> WSGIServer | None:
    """Serve /metrics of this process on base_port + index (shut it down with ``.shutdown()``);
    None when turned off (port 0) or when the port is taken."""
    if base_port <= 0:
        return None
    port = base_port + index
    try:
        server, _thread = start_http_server(port, addr=host)
    except OSError as exc:
        # A metrics port must never stop ingest: the worker runs on, unobserved, and says so.
        log.warning("ingest worker %d: cannot serve metrics on %s:%d (%s); running without", index, host, port, exc)
        return None
    log.info("ingest worker %d: metrics on http://%s:%d/metrics", index, host, port)
    return server
