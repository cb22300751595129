-- EPCIS sensor-data events of delivered shipments, stored exactly as first exported.
-- An exported event id is a hash of its content, so an exported event is never changed: a later
-- correction is a new row (kind 'event', next seq) plus a row re-exporting the previous event
-- with its errorDeclaration (kind 'declaration'). ``id`` is the export order consumers page by.
CREATE TABLE epcis_sensor_exports (
    id            bigserial PRIMARY KEY,
    shipment      text NOT NULL REFERENCES shipments (ref) ON DELETE CASCADE,
    seq           integer NOT NULL CHECK (seq >= 0),
    kind          text NOT NULL CHECK (kind IN ('event', 'declaration')),
    event_id      text NOT NULL,
    event         json NOT NULL,            -- json, not jsonb: kept byte for byte as exported
    window_start  timestamptz NOT NULL,     -- the trip window the event summarised
    window_end    timestamptz NOT NULL,
    published_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shipment, seq, kind)
);
CREATE INDEX epcis_sensor_exports_shipment ON epcis_sensor_exports (shipment, seq DESC);
