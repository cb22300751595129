-- Shipments in event time, environmental and device alarms, after-sales tickets.

-- Extension of the contract's profile: "out of range for N seconds in total" (cumulative trigger).
ALTER TABLE profiles ADD COLUMN cumulative_s integer CHECK (cumulative_s > 0);
ALTER TABLE shipments ADD COLUMN cancelled_at timestamptz;

-- Each transition of a shipment happens once: derived from scans and positions in event time,
-- so a late position can move a transition's time but never adds a second one.
CREATE TABLE shipment_events (
    id           bigserial PRIMARY KEY,
    shipment     text NOT NULL REFERENCES shipments (ref) ON DELETE CASCADE,
    ts           timestamptz NOT NULL,
    type         text NOT NULL CHECK (type IN ('loading', 'departed', 'arrived', 'delivered', 'cancelled',
                                               'delayed', 'delivered_late')),
    detail       text NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (shipment, type)
);
CREATE INDEX shipment_events_ts ON shipment_events (shipment, ts);

-- What the API shows of a shipment in motion, kept by ingest whenever its inputs change.
CREATE TABLE shipment_state (
    ref                    text PRIMARY KEY REFERENCES shipments (ref) ON DELETE CASCADE,
    last_lat               double precision,
    last_lon               double precision,
    last_ts                timestamptz,
    eta                    timestamptz,
    distance_remaining_km  double precision,
    delayed                boolean NOT NULL DEFAULT false,
    delivered_at           timestamptz,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- After-sales service tickets. A logistics exception is opened automatically once per shipment
-- and cause (a temperature excursion; a delivery after the promise).
CREATE TABLE tickets (
    id          bigserial PRIMARY KEY,
    type        text NOT NULL CHECK (type IN ('complaint', 'return', 'repair', 'logistics_exception')),
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'in_progress', 'resolved', 'closed')),
    shipment    text REFERENCES shipments (ref),
    alarm_id    bigint REFERENCES alarms (id),
    cause       text,                         -- temperature_excursion, late_delivery (automatic ones)
    rma         text UNIQUE,                  -- a return scan with this ref is linked to the ticket
    opened_at   timestamptz NOT NULL DEFAULT now(),
    summary     text NOT NULL,
    notes       jsonb NOT NULL DEFAULT '[]',  -- [{"at", "by", "text"}]
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tickets_automatic_once ON tickets (shipment, cause) WHERE cause IS NOT NULL;
CREATE INDEX tickets_shipment ON tickets (shipment, opened_at DESC);

-- Environmental alarms are re-derived over a window of readings; these find them.
CREATE INDEX alarms_subject ON alarms (subject, type, started_at);
ALTER TABLE alarms ADD COLUMN triggered_at timestamptz;
ALTER TABLE alarms ADD COLUMN seconds_out double precision;

-- Positions filtered out keep their row and say why (filter_reason); the shipment track and
-- state use the others. Lookups by vehicle go through the device registry.
CREATE INDEX devices_vehicle ON devices (vehicle) WHERE vehicle IS NOT NULL;
CREATE INDEX movements_ref_step ON movements (ref, biz_step) WHERE ref IS NOT NULL;
