"""Issue 14 point 9: Prometheus /metrics of an ingest worker and of the API, scraped over HTTP
after real traffic (devices over MQTT, the real database), counters compared exactly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.tokens import create_token
from ingest.worker import IngestWorker
from runtime.metrics import serve_worker_metrics
from runtime.settings import Settings
from tests.e2e.fixtures import SseReader, running_api
from tests.integration.broker_fixtures import free_port
from tests.integration.stack_helpers import count, device, provision, running_worker, stack_settings, wait_until

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the series does not exist yet (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def settings(broker_settings: Settings, database_url: str, db: psycopg.Connection) -> Iterator[Settings]:
    yield stack_settings(broker_settings, database_url, ingest_metrics_port=free_port())


def test_worker_metrics_count_exactly_what_the_devices_sent(settings: Settings, db: psycopg.Connection) -> None:
    creds = provision(settings, db)
    url = f"http://127.0.0.1:{settings.ingest_metrics_port}/metrics"  # worker index 0: base port + 0
    now = datetime.now(UTC)
    good = [{"msg_id": f"m{i}", "ts": (now - timedelta(seconds=i)).isoformat(), "temp_c": 4.0 + i}
            for i in range(5)]
    with running_worker(settings) as worker:
        w = worker.client_id
        before = scrape(url)
        rules_before = value(before, "cargotrace_rule_seconds_count", rule="telemetry")
        assert value(before, "cargotrace_ingest_broker_connections_total", worker=w) == 1
        with device(creds, settings) as d:
            for reading in good:
                d.publish("env", reading)
            d.publish("env", good[0])  # a resend: stored once, counted as a duplicate
            d.publish("env", b'{"msg_id": "broken", "temp_c": 4.1')  # invalid_json
            d.publish("env", {"msg_id": "m-bad", "ts": now.isoformat(), "temp_c": "cold"})  # invalid_field
        wait_until(lambda: value(scrape(url), "cargotrace_ingest_messages_received_total", worker=w) == 8
                   and worker.counters.applied + worker.counters.duplicates + worker.counters.dead_letters == 8,
                   60, "the worker to apply the 8 messages")
        after = scrape(url)
        batches = worker.counters.batches
    assert count(db, "SELECT count(*) FROM env_readings WHERE device_id = %s", creds.device_id) == 5
    assert value(after, "cargotrace_ingest_messages_received_total", worker=w) == 8
    assert value(after, "cargotrace_ingest_messages_applied_total", worker=w) == 5
    assert value(after, "cargotrace_ingest_duplicates_total", worker=w) == 1
    dead = {(dict(labels)["reason"], dict(labels)["kind"]): v for (name, labels), v in after.items()
            if name == "cargotrace_ingest_dead_letters_total" and dict(labels)["worker"] == w}
    assert dead == {("invalid_json", "env"): 1, ("invalid_field", "env"): 1}
    assert value(after, "cargotrace_ingest_batch_size_count", worker=w) == batches
    assert value(after, "cargotrace_ingest_batch_size_sum", worker=w) == 8
    assert value(after, "cargotrace_ingest_batch_commit_seconds_count", worker=w) == batches
    assert value(after, "cargotrace_ingest_batch_commit_seconds_sum", worker=w) > 0
    assert value(after, "cargotrace_ingest_in_flight_messages", worker=w) == 0  # everything acked
    assert value(after, "cargotrace_ingest_unacked_bytes", worker=w) == 0
    # The telemetry rule ran once per batch that applied something (at least one such batch).
    assert value(after, "cargotrace_rule_seconds_count", rule="telemetry") - rules_before >= 1
    with pytest.raises(httpx.ConnectError):  # the worker's exporter stops with the worker
        httpx.get(url, timeout=5)


def test_in_flight_gauges_show_what_is_received_and_not_yet_acknowledged(settings: Settings,
                                                                          db: psycopg.Connection) -> None:
    creds = provision(settings, db)
    worker = IngestWorker(settings, 0)
    exporter = serve_worker_metrics(settings.ingest_metrics_port, 0, "127.0.0.1")
    assert exporter is not None
    url = f"http://127.0.0.1:{settings.ingest_metrics_port}/metrics"
    w = worker.client_id
    payloads = [orjson.dumps({"msg_id": f"held{i}", "ts": datetime.now(UTC).isoformat(), "temp_c": 1.0})
                for i in range(3)]
    try:
        worker.connect()  # subscribed, but no loop takes batches yet: whatever arrives is held
        wait_until(worker.subscribed.is_set, 60, "the worker's SUBACK")
        with device(creds, settings) as d:
            for payload in payloads:
                d.publish("env", payload)
        wait_until(lambda: value(scrape(url), "cargotrace_ingest_in_flight_messages", worker=w) == 3, 60,
                   "3 messages held")
        assert value(scrape(url), "cargotrace_ingest_unacked_bytes", worker=w) == sum(map(len, payloads))
        taken = 0
        deadline = time.monotonic() + 60
        while taken < 3 and time.monotonic() < deadline:
            taken += worker.run_once()  # commit, ack, release
        held = scrape(url)
        assert value(held, "cargotrace_ingest_in_flight_messages", worker=w) == 0
        assert value(held, "cargotrace_ingest_unacked_bytes", worker=w) == 0
        assert value(held, "cargotrace_ingest_messages_applied_total", worker=w) == 3
    finally:
        worker.stop()
        worker._client.disconnect()
        worker._client.loop_stop()
        worker._drop_db()
        exporter.shutdown()
        exporter.server_close()


def test_api_metrics_count_open_event_streams(settings: Settings, db: psycopg.Connection) -> None:
    token = create_token(db, "viewer", "metrics-test")
    with running_api(settings) as api:
        metrics_url = api + "/metrics"
        assert value(scrape(metrics_url), "cargotrace_api_event_stream_clients") == 0
        readers = [SseReader(api + "/api/v1/events/stream", {"Authorization": f"Bearer {token}"}) for _ in range(2)]
        try:
            for reader in readers:
                reader.ready()
            assert value(scrape(metrics_url), "cargotrace_api_event_stream_clients") == 2
        finally:
            for reader in readers:
                reader.close()
        wait_until(lambda: value(scrape(metrics_url), "cargotrace_api_event_stream_clients") == 0, 60,
                   "the closed streams to leave the gauge")
