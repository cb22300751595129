-- After-sales service (issue 13, CONTRACT §4): ticket workflow and SLA, returns (RMA), repairs,
-- customer feedback, notification subscriptions and their deliveries.

-- Repairs send goods to a repair bench; consumed parts leave stock for a `consumed` location
-- (double entry: a part used in a repair nets to zero like everything else).
ALTER TABLE locations DROP CONSTRAINT IF EXISTS locations_type_check;
ALTER TABLE locations ADD CONSTRAINT locations_type_check CHECK (type IN
    ('internal', 'dock', 'staging', 'vehicle', 'supplier', 'customer', 'returns', 'inventory_loss',
     'repair', 'consumed'));
ALTER TABLE items ADD COLUMN IF NOT EXISTS warranty_months integer CHECK (warranty_months >= 0);

-- Tickets as a workflow. `timeline` is [{ts, author, kind, text, status?}], event time (`ts`) as
-- the author states it (default: when it was written); the SLA is decided from it by core/sla.py.
ALTER TABLE tickets DROP CONSTRAINT IF EXISTS tickets_status_check;
ALTER TABLE tickets ADD CONSTRAINT tickets_status_check
    CHECK (status IN ('open', 'in_progress', 'waiting_customer', 'resolved', 'closed'));
ALTER TABLE tickets
    ADD COLUMN priority            integer NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
    ADD COLUMN assignee            text,
    ADD COLUMN escalated_to        text,
    ADD COLUMN customer            text,
    ADD COLUMN site                text,
    ADD COLUMN contact             text,                 -- how to reach the customer (public issues)
    ADD COLUMN channel             text NOT NULL DEFAULT 'staff',  -- staff, public, automatic
    ADD COLUMN first_response_due  timestamptz,         -- null until the service loop took it in
    ADD COLUMN resolution_due      timestamptz,
    ADD COLUMN first_response_at   timestamptz,
    ADD COLUMN resolved_at         timestamptz,
    ADD COLUMN sla_breached        boolean NOT NULL DEFAULT false,
    ADD COLUMN sla_breaches        text[] NOT NULL DEFAULT '{}',   -- kinds raised: first_response, resolution
    ADD COLUMN timeline            jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN feedback_score      integer CHECK (feedback_score BETWEEN 1 AND 5),
    ADD COLUMN feedback_comment    text,
    ADD COLUMN feedback_at         timestamptz;
-- Tickets the SLA sweep must still look at (not yet taken in, or open with a clock running).
CREATE INDEX tickets_sla_open ON tickets (id) WHERE cardinality(sla_breaches) < 2;
CREATE INDEX tickets_public_recent ON tickets (shipment, opened_at) WHERE channel = 'public';

-- Assignment: tickets of a type at a site go to its agents in turn (site '*' = any site).
CREATE TABLE assignment_rules (
    type           text NOT NULL CHECK (type IN ('complaint', 'return', 'repair', 'logistics_exception')),
    site           text NOT NULL,
    agents         text[] NOT NULL,
    escalate_to    text,
    last_assignee  text,            -- the round robin's position
    PRIMARY KEY (type, site)
);

-- Returns.
CREATE TABLE rmas (
    id                 bigserial PRIMARY KEY,
    ref                text NOT NULL UNIQUE,
    status             text NOT NULL DEFAULT 'requested'
                       CHECK (status IN ('requested', 'approved', 'rejected', 'received', 'inspected', 'closed')),
    customer           text NOT NULL REFERENCES locations (code),
    order_ref          text,
    shipment           text REFERENCES shipments (ref),
    returns_location   text NOT NULL REFERENCES locations (code),
    -- SET NULL: ingest may delete an untouched automatic ticket whose alarm late data withdrew.
    ticket_id          bigint REFERENCES tickets (id) ON DELETE SET NULL,
    decision_reason    text,
    decided_by         text,
    refund             jsonb,        -- {amount, currency, status}
    replacement_order  text,
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE rma_lines (
    rma_id  bigint NOT NULL REFERENCES rmas (id),
    n       integer NOT NULL,
    sku     text NOT NULL REFERENCES items (sku),
    qty     numeric NOT NULL CHECK (qty > 0),
    serial  text,
    lot     text,
    reason  text NOT NULL,
    PRIMARY KEY (rma_id, n)
);
-- Each return movement with the RMA's ref, matched once against the lines.
CREATE TABLE rma_receipts (
    movement_id  bigint PRIMARY KEY REFERENCES movements (id),
    rma_id       bigint NOT NULL REFERENCES rmas (id),
    line         integer,
    exception    text,
    alarm_id     bigint REFERENCES alarms (id)
);
CREATE TABLE rma_inspections (
    movement_id  bigint PRIMARY KEY REFERENCES movements (id),
    rma_id       bigint NOT NULL REFERENCES rmas (id),
    disposition  text NOT NULL CHECK (disposition IN ('restock', 'scrap', 'repair', 'return_to_supplier')),
    inspected_by text NOT NULL
);

-- Repairs.
CREATE TABLE repairs (
    id              bigserial PRIMARY KEY,
    ticket_id       bigint REFERENCES tickets (id) ON DELETE SET NULL,  -- as rmas.ticket_id
    sku             text NOT NULL REFERENCES items (sku),
    serial          text NOT NULL,
    fault           text NOT NULL,
    status          text NOT NULL DEFAULT 'open'
                    CHECK (status IN ('open', 'in_progress', 'waiting_parts', 'done', 'cancelled')),
    site            text NOT NULL REFERENCES sites (code),
    delivered_at    timestamptz,
    warranty_until  date,
    covered         boolean NOT NULL,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Notifications: subscriptions and one delivery per (subscription, outbox event).
CREATE TABLE subscriptions (
    id          text PRIMARY KEY,
    channel     text NOT NULL CHECK (channel IN ('webhook', 'email')),
    target      text NOT NULL,
    events      text[] NOT NULL,
    filter      jsonb,
    secret      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE deliveries (
    id               bigserial PRIMARY KEY,
    subscription_id  text NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
    outbox_id        bigint NOT NULL,
    kind             text NOT NULL,
    payload          jsonb NOT NULL,          -- kept: the outbox is trimmed after 7 days
    delivery_key     text NOT NULL UNIQUE,    -- X-Cargotrace-Delivery
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    last_error       text,
    last_http_status integer,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (subscription_id, outbox_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
-- Direct notifications (the customer's contact, the assigned agent) go through the same table
-- with subscription_id of a built-in row per channel.
CREATE TABLE notifier_position (
    name     text PRIMARY KEY,
    last_id  bigint NOT NULL
);
-- Start after what already exists: a subscription hears of what happens from now on.
INSERT INTO notifier_position VALUES ('outbox', (SELECT coalesce(max(id), 0) FROM events_outbox));

-- Tickets and returns reach the event stream (and so the notifier) like movements and alarms. A
-- ticket opened by ingest gets its customer and assignee from the service loop's intake: that
-- update is an event too, so the customer's and the agent's subscriptions hear of it.
CREATE CONSTRAINT TRIGGER tickets_publish_insert AFTER INSERT ON tickets
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION events_outbox_publish('ticket');
CREATE CONSTRAINT TRIGGER tickets_publish_update AFTER UPDATE ON tickets
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN ((OLD.status, OLD.assignee, OLD.escalated_to, OLD.sla_breached, OLD.priority, OLD.customer)
          IS DISTINCT FROM (NEW.status, NEW.assignee, NEW.escalated_to, NEW.sla_breached, NEW.priority, NEW.customer))
    EXECUTE FUNCTION events_outbox_publish('ticket');
CREATE CONSTRAINT TRIGGER rmas_publish_insert AFTER INSERT ON rmas
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION events_outbox_publish('rma');
CREATE CONSTRAINT TRIGGER rmas_publish_update AFTER UPDATE ON rmas
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION events_outbox_publish('rma');
