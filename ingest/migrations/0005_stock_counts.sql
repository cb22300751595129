-- Cycle counts. The adjustment of a count depends on the book balance at its event time, so a
-- late (backdated) movement or count re-decides it: the old adjustment is reversed and a new one
-- posted (revision + 1), never edited.
CREATE TABLE stock_counts (
    id             bigserial PRIMARY KEY,
    sku            text NOT NULL,
    location       text NOT NULL,
    lot            text NOT NULL DEFAULT '',
    ts             timestamptz NOT NULL,
    counted        numeric NOT NULL CHECK (counted >= 0),
    expiry         date,
    loss_location  text NOT NULL,
    ref            text,
    device_id      text NOT NULL,
    msg_id         text NOT NULL,
    revision       integer NOT NULL DEFAULT 0,
    adjustment     bigint REFERENCES movements (id),
    UNIQUE (device_id, msg_id)
);
CREATE INDEX stock_counts_key ON stock_counts (sku, location, lot, ts);
CREATE INDEX movements_serial ON movements (sku, serial) WHERE serial IS NOT NULL;
