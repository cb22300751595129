-- The stock ledger: append-only, double-entry. Balances are derived (and rebuildable).
CREATE TABLE movements (
    id             bigserial PRIMARY KEY,
    ts             timestamptz NOT NULL,         -- event time (the scan's or the passage's)
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    sku            text NOT NULL,
    qty            numeric NOT NULL CHECK (qty > 0),
    from_location  text NOT NULL,
    to_location    text NOT NULL CHECK (to_location <> from_location),
    lot            text,
    serial         text,
    expiry         date,
    biz_step       text NOT NULL,                -- CBV: receiving, storing, picking, loading, ...
    disposition    text,                         -- CBV: in_progress, in_transit, returned, ...
    ref            text,
    device_id      text,
    msg_id         text,
    line           integer NOT NULL DEFAULT 0,   -- several movements may come from one message
    source         text NOT NULL,                -- scan, rfid, count, correction, api
    reverses       bigint UNIQUE REFERENCES movements (id),
    -- One message is applied once: its movements are identified by (device, msg, line).
    UNIQUE (device_id, msg_id, line)
);
CREATE INDEX movements_ts ON movements (ts DESC, id DESC);
CREATE INDEX movements_sku_ts ON movements (sku, ts DESC);
CREATE INDEX movements_from ON movements (from_location, ts DESC);
CREATE INDEX movements_to ON movements (to_location, ts DESC);
CREATE INDEX movements_ref ON movements (ref) WHERE ref IS NOT NULL;

-- Balance per (sku, location, lot); '' is "no lot" so that the key can be a primary key.
CREATE TABLE balances (
    sku       text NOT NULL,
    location  text NOT NULL,
    lot       text NOT NULL DEFAULT '',
    qty       numeric NOT NULL,
    expiry    date,
    PRIMARY KEY (sku, location, lot)
);
CREATE INDEX balances_location ON balances (location);

-- Where each serialised unit is: the serial's own "balance".
CREATE TABLE serials (
    sku       text NOT NULL,
    serial    text NOT NULL,
    location  text NOT NULL,
    lot       text,
    ts        timestamptz NOT NULL,              -- event time of the movement that put it there
    movement  bigint NOT NULL REFERENCES movements (id),
    PRIMARY KEY (sku, serial)
);

-- RFID passages and observations (also the one-sided / ambiguous ones, which move nothing).
CREATE TABLE rfid_passages (
    id             bigserial PRIMARY KEY,
    gate           text NOT NULL,
    epc            text NOT NULL,
    first_ts       timestamptz NOT NULL,
    last_ts        timestamptz NOT NULL,
    direction      text CHECK (direction IN ('inbound', 'outbound')),
    reason         text,                          -- why no direction
    scheme         text NOT NULL,                 -- sgtin, sscc, sgln, unknown
    sku            text,
    serial         text,
    sscc           text,
    reads          integer NOT NULL,
    movement       bigint REFERENCES movements (id),
    UNIQUE (gate, epc, first_ts)
);
CREATE INDEX rfid_passages_gate ON rfid_passages (gate, last_ts DESC);

-- Alarms of every kind (stock discrepancies here; environmental, device and shipment alarms later).
CREATE TABLE alarms (
    id            bigserial PRIMARY KEY,
    type          text NOT NULL,
    severity      text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state         text NOT NULL CHECK (state IN ('active', 'cleared')),
    acknowledged  boolean NOT NULL DEFAULT false,
    ack_note      text,
    ack_by        text,
    ack_at        timestamptz,
    device_id     text,
    shipment      text,
    location      text,
    sku           text,
    lot           text,
    subject       text NOT NULL,                  -- what the alarm is about, unique while active
    started_at    timestamptz NOT NULL,
    cleared_at    timestamptz,
    peak_value    double precision,
    message       text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- One active alarm per (type, subject): e.g. per (device, type) or per (sku, location, lot).
CREATE UNIQUE INDEX alarms_one_active ON alarms (type, subject) WHERE state = 'active';
CREATE INDEX alarms_state ON alarms (state, started_at DESC);

-- Dead-letter replay bookkeeping exists on dead_letters already (replayed_at, replay_result).
