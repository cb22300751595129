-- Stock rules engine (issue 9): the windows ingest loads need index support, returns may wait
-- for their serial's delivery, RFID passages are re-derived (revision) and swept from the
-- oldest recently arrived read of their gate.

-- The window of one (sku, location, lot) key from a point in event time, from either side.
CREATE INDEX movements_sku_to_ts ON movements (sku, to_location, ts);
CREATE INDEX movements_sku_from_ts ON movements (sku, from_location, ts);
-- (The stored discrepancy episodes of a key are found by alarms_subject, from 0006.)

-- A serialised return whose serial was not at a customer just before the return (in event time):
-- it is booked once a movement of that serial arrives that puts it at a customer, never a dead letter.
CREATE TABLE stock_parked_returns (
    device_id    text NOT NULL,
    msg_id       text NOT NULL,
    sku          text NOT NULL,
    serial       text NOT NULL,
    ts           timestamptz NOT NULL,
    ts_source    text NOT NULL,
    received_at  timestamptz NOT NULL,
    code         text NOT NULL,
    mode         text,
    qty          double precision,
    location     text,
    to_location  text,
    ref          text,
    PRIMARY KEY (device_id, msg_id)
);
CREATE INDEX stock_parked_returns_serial ON stock_parked_returns (sku, serial);

-- A passage is re-derived when reads of it arrive late; its movement is then reversed and
-- re-posted under line = revision.
ALTER TABLE rfid_passages ADD COLUMN revision integer NOT NULL DEFAULT 0;
CREATE INDEX rfid_passages_gate_epc ON rfid_passages (gate, epc, last_ts);

-- Per gate: the earliest event time of reads committed since its last sweep (NULL: nothing new).
-- Kept by ingest in the reads' transaction, so the sweep sees exactly what is committed.
CREATE TABLE rfid_gate_pending (
    gate        text PRIMARY KEY,
    since       timestamptz,
    touched_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Gates that were active before this migration: swept once from their newest read, as before.
INSERT INTO rfid_gate_pending (gate, since)
SELECT d.device_id, s.last_ts FROM devices d JOIN device_state s USING (device_id) WHERE d.kind = 'rfid_gate';
