"""Configuration, read once from the environment (prefix ``CARGOTRACE_``) and passed explicitly.

Secrets the local stack generates for itself (broker service accounts) live in
``<state_dir>/secrets.json``; an environment variable always wins over that file, so a
production deployment sets them explicitly and never has such a file.
"""

from __future__ import annotations

import json
import os
import secrets as _secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

_GENERATED_SECRETS = ("mqtt_service_password", "mqtt_admin_password")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARGOTRACE_", extra="ignore", frozen=True)

    # --- database -------------------------------------------------------------------------------
    database_url: str = "postgresql://cargotrace:cargotrace@127.0.0.1:5432/cargotrace"
    # database_url is the superuser's, for the one-time bootstrap (`cargotrace db bootstrap`, run by
    # `up`). The least-privilege roles (ingest/db_roles.py): the owner runs migrations, retention
    # and the health loop; unset: the ones the bootstrap created (<state_dir>/db-roles.json).
    owner_database_url: str = ""
    ingest_database_url: str = ""
    api_database_url: str = ""
    # `cargotrace up`/`run`/`demo` create and use those roles; false: the services use database_url.
    db_service_roles: bool = True

    # --- broker ---------------------------------------------------------------------------------
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1884
    topic_prefix: str = "cargotrace/v1"
    # Start and stop a local Mosquitto from the project's mosquitto.conf in `cargotrace up`.
    # Set to false when pointing at an external broker.
    manage_broker: bool = True
    mosquitto_conf: Path = PROJECT_ROOT / "mosquitto.conf"
    mosquitto_bin: str = "mosquitto"
    mqtt_service_user: str = "cargotrace-service"
    mqtt_service_password: str = ""
    mqtt_admin_user: str = "cargotrace-admin"
    mqtt_admin_password: str = ""
    # TLS. The local broker listens on mqtt_tls_port with TLS as well as on mqtt_port (0: no TLS
    # listener); with mqtt_tls the platform's clients connect there, verifying the broker against
    # mqtt_ca_file (default: the CA `cargotrace up` generated in <state_dir>/broker/tls/).
    mqtt_tls: bool = False
    mqtt_tls_port: int = 8884
    mqtt_ca_file: Path | None = None
    # The broker's own certificate and key; unset: generated for the local stack.
    broker_tls_certfile: Path | None = None
    broker_tls_keyfile: Path | None = None

    # Which broker carries device traffic: one Mosquitto, or a NATS cluster with JetStream
    # (CONTRACT section 5). Devices speak MQTT to either; only the transport seam differs.
    broker: Literal["mosquitto", "nats"] = "mosquitto"
    # NATS client URLs of the cluster (comma separated) for the services; empty: the local cluster.
    nats_servers: str = ""
    nats_bin: str = "nats-server"
    # The local cluster of `cargotrace up --cluster N`: node i listens on base+i (clients),
    # base+10+i (MQTT), base+20+i (routes), base+30+i (monitoring).
    nats_port_base: int = 14300
    nats_cluster_size: int = 3
    nats_stream: str = "CARGOTRACE_DEV"
    nats_durable: str = "cargotrace-ingest"
    nats_replicas: int = 3
    # A delivered message not acked within this time is redelivered (to any worker).
    nats_ack_wait_s: float = 30.0

    # --- local state ----------------------------------------------------------------------------
    state_dir: Path = PROJECT_ROOT / ".cargotrace"

    # --- ingest ---------------------------------------------------------------------------------
    ingest_workers: int = 2
    ingest_group: str = "cargotrace-ingest"
    ingest_client_prefix: str = "cargotrace-ingest"
    # Messages a worker holds un-acked at once (MQTT 5 Receive Maximum): the memory bound.
    ingest_inflight: int = 8000
    # Payload bytes a worker holds un-acked at once: the memory bound for large payloads.
    ingest_max_unacked_bytes: int = 64 * 1024 * 1024
    ingest_batch_max: int = 4000
    ingest_batch_wait_ms: int = 40
    ingest_session_expiry_s: int = 7 * 24 * 3600
    # Prometheus /metrics of each ingest worker on this port + the worker's index (0: not served).
    ingest_metrics_port: int = 0
    ingest_metrics_host: str = "127.0.0.1"
    max_payload_bytes: int = 256 * 1024
    # How often a worker closes RFID passages whose tags have gone silent.
    rfid_sweep_interval_s: float = 1.0
    max_future_skew_s: int = 300
    # A lot on hand expiring within this many days raises lot_expiring (CONTRACT 3.3).
    expiry_warning_days: int = 30

    # --- retention (days; 0 keeps forever) ------------------------------------------------------
    retention_scans_days: int = 730
    retention_rfid_reads_days: int = 90
    retention_positions_days: int = 365
    retention_env_readings_days: int = 730
    retention_device_status_days: int = 90
    retention_dead_letters_days: int = 180
    # How long a (device_id, msg_id) is remembered for de-duplication.
    dedupe_window_days: int = 14
    maintain_interval_s: int = 3600

    # --- API ------------------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_db_pool_max: int = 8
    # Open event streams allowed per API token and per API process (429 beyond).
    api_streams_per_token: int = 4
    api_streams_total: int = 200
    # Largest request body accepted (413 beyond it, before the body is read).
    api_max_body_bytes: int = 1024 * 1024
    # EPCIS export: locations have no GLN here, so they are URNs under this base. Event ids are the
    # CBV 2.0 event hash of the content; the site id keys the signature of nextPageToken.
    epcis_location_base: str = "urn:cargotrace:location:"
    epcis_site_id: str = "cargotrace"
    # A delivered shipment's sensor-data event is exported once no reading of its trip has been
    # received for this long (buffered sensors flush late); see core/epcis_sensors.py.
    epcis_sensor_grace_s: int = 900

    # --- devices --------------------------------------------------------------------------------
    # A device is offline after this many of its own expected intervals without a message (the
    # interval is learned from its messages); until one is known, after device_offline_after_s.
    device_offline_multiple: float = 5.0
    device_offline_after_s: int = 600

    log_level: str = Field(default="INFO")

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def db_roles_file(self) -> Path:
        return self.state_dir / "db-roles.json"

    @property
    def owner_url(self) -> str:
        return self.owner_database_url or self.database_url

    @property
    def ingest_url(self) -> str:
        return self.ingest_database_url or self.database_url

    @property
    def api_url(self) -> str:
        return self.api_database_url or self.database_url

    @property
    def broker_dir(self) -> Path:
        return self.state_dir / "broker"

    @property
    def mqtt_ca_path(self) -> Path:
        return self.mqtt_ca_file or self.broker_dir / "tls" / "ca.crt"

    @property
    def mqtt_client_port(self) -> int:
        """The port the platform's own MQTT clients connect to (TLS or plain)."""
        return self.mqtt_tls_port if self.mqtt_tls else self.mqtt_port

    @property
    def nats_dir(self) -> Path:
        return self.state_dir / "nats"

    def nats_urls(self) -> list[str]:
        if self.nats_servers:
            return [url.strip() for url in self.nats_servers.split(",") if url.strip()]
        return [f"nats://127.0.0.1:{self.nats_port_base + i}" for i in range(self.nats_cluster_size)]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only FROM THE START: the file is
    created with mode 0600 by open(2) itself, never written first and chmod-ed after."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def _read_secrets(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    return data if isinstance(data, dict) else {}


def load_settings(*, create_secrets: bool = False, **overrides: Any) -> Settings:
    """Read the environment once; fill generated local secrets from the state directory.

    With ``create_secrets`` (used by ``cargotrace up``) missing secrets are generated and saved
    (mode 0600) so that the broker accounts and the services agree on them.
    """
    settings = Settings(**overrides)
    stored = _read_secrets(settings.secrets_file)
    missing = {name for name in _GENERATED_SECRETS if not getattr(settings, name)}
    fill: dict[str, Any] = {name: stored[name] for name in missing if stored.get(name)}
    still_missing = missing - fill.keys()
    if still_missing and create_secrets:
        for name in still_missing:
            fill[name] = _secrets.token_urlsafe(24)
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        stored.update(fill)
        write_private(settings.secrets_file, json.dumps(stored, indent=2))
    if not fill:
        return settings
    return settings.model_copy(update=fill)
