-- Device registry, message identity, raw telemetry hypertables and dead letters.
CREATE EXTENSION IF NOT EXISTS timescaledb;

CREATE TABLE devices (
    device_id   text PRIMARY KEY CHECK (device_id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    kind        text NOT NULL CHECK (kind IN ('scanner', 'rfid_gate', 'gps_tracker', 'env_sensor')),
    site        text,
    location    text,
    mode        text,
    vehicle     text,
    profile     text,
    gate        jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Liveness, kept by ingest in the same transaction as the data (one upsert per device per batch).
CREATE TABLE device_state (
    device_id     text PRIMARY KEY,
    last_seen     timestamptz NOT NULL,   -- receive time of the newest message
    last_ts       timestamptz NOT NULL,   -- newest device time seen (not the last one received)
    messages      bigint NOT NULL DEFAULT 0
);

-- Identity of a message: (device_id, msg_id) is applied once. A plain table, because a
-- hypertable's unique index would have to include a time column, and a message without `ts`
-- gets a new receive time on every redelivery. Rows older than the de-duplication window are
-- removed by `cargotrace maintain`; BRIN keeps that cheap without a btree on the hot path.
CREATE TABLE message_ids (
    device_id    text NOT NULL,
    msg_id       text NOT NULL,
    kind         text NOT NULL,
    received_at  timestamptz NOT NULL,
    PRIMARY KEY (device_id, msg_id)
);
CREATE INDEX message_ids_received_brin ON message_ids USING brin (received_at);

-- Raw telemetry. Every table keeps device time (ts, the partitioning column) and receive time;
-- ts_source says whether ts came from the device or, missing, is the receive time.
CREATE TABLE scans (
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    ts_source    text NOT NULL CHECK (ts_source IN ('device', 'server')),
    device_id    text NOT NULL,
    msg_id       text NOT NULL,
    code         text NOT NULL,
    mode         text,
    qty          double precision,
    location     text,
    to_location  text,
    ref          text
);
SELECT create_hypertable('scans', 'ts', chunk_time_interval => interval '7 days');
CREATE INDEX scans_device_ts ON scans (device_id, ts DESC);

CREATE TABLE rfid_reads (
    ts           timestamptz NOT NULL,   -- the read's own time, else the message's
    received_at  timestamptz NOT NULL,
    device_id    text NOT NULL,
    msg_id       text NOT NULL,
    read_no      integer NOT NULL,       -- index in the message's reads array
    epc          text NOT NULL,
    antenna      smallint NOT NULL,
    rssi         real NOT NULL
);
SELECT create_hypertable('rfid_reads', 'ts', chunk_time_interval => interval '1 day');
CREATE INDEX rfid_reads_device_ts ON rfid_reads (device_id, ts DESC);
CREATE INDEX rfid_reads_epc_ts ON rfid_reads (epc, ts DESC);

CREATE TABLE positions (
    ts            timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    device_id     text NOT NULL,
    msg_id        text NOT NULL,
    lat           double precision,
    lon           double precision,
    speed_kmh     real,
    heading_deg   real,
    alt_m         real,
    accuracy_m    real,
    source        text NOT NULL CHECK (source IN ('json', 'nmea')),
    fix_valid     boolean NOT NULL,
    filter_reason text                   -- set when the position must not drive state
);
SELECT create_hypertable('positions', 'ts', chunk_time_interval => interval '1 day');
CREATE INDEX positions_device_ts ON positions (device_id, ts DESC);

CREATE TABLE env_readings (
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    device_id    text NOT NULL,
    msg_id       text NOT NULL,
    temp_c       real,
    rh_pct       real,
    probe        text
);
SELECT create_hypertable('env_readings', 'ts', chunk_time_interval => interval '1 day');
CREATE INDEX env_readings_device_ts ON env_readings (device_id, ts DESC);

CREATE TABLE device_status (
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    ts_source    text NOT NULL CHECK (ts_source IN ('device', 'server')),
    device_id    text NOT NULL,
    msg_id       text NOT NULL,
    battery_pct  real,
    rssi_dbm     real,
    fw           text,
    uptime_s     bigint
);
SELECT create_hypertable('device_status', 'ts', chunk_time_interval => interval '7 days');
CREATE INDEX device_status_device_ts ON device_status (device_id, ts DESC);

-- Everything that could not be accepted, with the raw payload and why. The fingerprint makes a
-- redelivery of the same bad payload one letter (its occurrences counted), not two.
CREATE TABLE dead_letters (
    id                bigserial PRIMARY KEY,
    received_at       timestamptz NOT NULL,
    last_received_at  timestamptz NOT NULL,
    occurrences       integer NOT NULL DEFAULT 1,
    topic             text NOT NULL,
    device_id         text,
    reason            text NOT NULL,
    detail            text NOT NULL,
    element_index     integer,
    payload           bytea NOT NULL,    -- raw bytes; truncated only for oversized payloads
    payload_size      integer NOT NULL,
    fingerprint       bytea NOT NULL UNIQUE,
    replayed_at       timestamptz,
    replay_result     text
);
CREATE INDEX dead_letters_received ON dead_letters (received_at DESC);
CREATE INDEX dead_letters_device ON dead_letters (device_id, received_at DESC);
CREATE INDEX dead_letters_reason ON dead_letters (reason, received_at DESC);
