-- Orders drive the warehouse (CONTRACT section 3): outbound orders, reservations, tasks pushed to
-- scanners, purchase orders, replenishment settings. Every decision is made in core/ (orders,
-- tasks, purchase_orders, forecast, replenishment); these tables hold its inputs and results.

-- Replenishment settings per item, and per (item, site) where a site differs.
ALTER TABLE items
    ADD COLUMN reorder_point     numeric CHECK (reorder_point >= 0),
    ADD COLUMN reorder_qty       numeric CHECK (reorder_qty > 0),
    ADD COLUMN lead_time_days    numeric CHECK (lead_time_days >= 0),
    ADD COLUMN default_location  text REFERENCES locations (code);   -- putaway target

CREATE TABLE item_site_policies (
    sku             text NOT NULL REFERENCES items (sku),
    site            text NOT NULL REFERENCES sites (code),
    reorder_point   numeric CHECK (reorder_point >= 0),
    reorder_qty     numeric CHECK (reorder_qty > 0),
    lead_time_days  numeric CHECK (lead_time_days >= 0),
    PRIMARY KEY (sku, site)
);

CREATE TABLE orders (
    ref           text PRIMARY KEY,
    customer      text NOT NULL REFERENCES locations (code),
    site          text NOT NULL REFERENCES sites (code),
    destination   text REFERENCES geofences (code),
    requested_at  timestamptz NOT NULL,
    priority      smallint NOT NULL DEFAULT 3 CHECK (priority BETWEEN 1 AND 5),
    status        text NOT NULL DEFAULT 'open',
    public_token  text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_status ON orders (status, priority, requested_at);

CREATE TABLE order_lines (
    order_ref  text NOT NULL REFERENCES orders (ref) ON DELETE CASCADE,
    line_no    integer NOT NULL,
    sku        text NOT NULL REFERENCES items (sku),
    qty        numeric NOT NULL CHECK (qty > 0),
    lot        text,
    PRIMARY KEY (order_ref, line_no)
);

-- Shipments an order's goods are loaded onto (PUT /orders `shipments`, an extension): ship scans
-- with one of these refs count for the order, the shipment's delivery delivers it.
CREATE TABLE order_shipments (
    order_ref  text NOT NULL REFERENCES orders (ref) ON DELETE CASCADE,
    shipment   text NOT NULL REFERENCES shipments (ref),
    PRIMARY KEY (order_ref, shipment)
);
CREATE INDEX order_shipments_shipment ON order_shipments (shipment);

-- What happened to an order (core.orders.Fact), identified so a redelivered scan counts once.
CREATE TABLE order_facts (
    order_ref  text NOT NULL REFERENCES orders (ref) ON DELETE CASCADE,
    identity   text NOT NULL,
    kind       text NOT NULL,
    ts         timestamptz NOT NULL,
    line_no    integer,
    sku        text,
    qty        numeric NOT NULL DEFAULT 0,
    shipment   text,
    PRIMARY KEY (order_ref, identity)
);

-- Stock held for an order line at one (sku, location, lot); lot '' = untracked, like balances.
CREATE TABLE reservations (
    id         bigserial PRIMARY KEY,
    order_ref  text NOT NULL REFERENCES orders (ref) ON DELETE CASCADE,
    line_no    integer NOT NULL,
    sku        text NOT NULL,
    location   text NOT NULL,
    lot        text NOT NULL DEFAULT '',
    qty        numeric NOT NULL CHECK (qty > 0),
    task_id    text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_key ON reservations (sku, location, lot);
CREATE INDEX reservations_order ON reservations (order_ref, line_no);

CREATE TABLE tasks (
    task_id        text PRIMARY KEY,
    type           text NOT NULL CHECK (type IN ('pick', 'putaway', 'receive', 'count')),
    ref            text NOT NULL,
    line_no        integer NOT NULL,
    site           text NOT NULL,
    sku            text NOT NULL,
    gtin           text,
    lot            text,
    qty            numeric NOT NULL CHECK (qty > 0),
    done_qty       numeric NOT NULL DEFAULT 0,
    from_location  text,
    to_location    text,
    device_id      text,
    due_at         timestamptz,
    status         text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'done', 'short', 'cancelled')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tasks_device_open ON tasks (device_id) WHERE status = 'open';
CREATE INDEX tasks_ref ON tasks (ref);

-- The scans that worked a task (and the refused ones, with their reason), one per message.
CREATE TABLE task_scans (
    device_id  text NOT NULL,
    msg_id     text NOT NULL,
    task_id    text,
    ts         timestamptz NOT NULL,
    qty        numeric NOT NULL,
    short      boolean NOT NULL DEFAULT false,
    ok         boolean NOT NULL,
    reason     text,
    PRIMARY KEY (device_id, msg_id)
);
CREATE INDEX task_scans_task ON task_scans (task_id);

-- Retained task lists: the version a device's list has reached and the version last published.
CREATE TABLE device_task_versions (
    device_id          text PRIMARY KEY,
    version            bigint NOT NULL DEFAULT 0,
    published_version  bigint NOT NULL DEFAULT 0
);

-- Feedback owed to scanners (not retained): an outbox the downlink publisher drains.
CREATE TABLE scan_feedback (
    id            bigserial PRIMARY KEY,
    device_id     text NOT NULL,
    msg_id        text NOT NULL,
    ok            boolean NOT NULL,
    reason        text,
    task_id       text,
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz,
    UNIQUE (device_id, msg_id)
);
CREATE INDEX scan_feedback_pending ON scan_feedback (id) WHERE published_at IS NULL;

-- Round-robin position per site: where the next release starts handing tasks to scanners.
CREATE TABLE site_task_turns (
    site  text PRIMARY KEY,
    turn  bigint NOT NULL DEFAULT 0
);

CREATE TABLE purchase_orders (
    ref          text PRIMARY KEY,
    supplier     text NOT NULL REFERENCES locations (code),
    site         text NOT NULL REFERENCES sites (code),
    expected_at  timestamptz,
    lines        jsonb NOT NULL,
    closed       boolean NOT NULL DEFAULT false,
    status       text NOT NULL DEFAULT 'open',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The public order page looks tokens up by digest (see api/store/tracking.py for why).
CREATE INDEX orders_public_token_md5 ON orders (md5(public_token));

-- Wake the downlink publisher when a task list changes or feedback is owed (delivered at commit).
CREATE FUNCTION downlink_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cargotrace_downlink', TG_TABLE_NAME);
    RETURN NULL;
END $$;
CREATE TRIGGER scan_feedback_notify AFTER INSERT ON scan_feedback
    FOR EACH STATEMENT EXECUTE FUNCTION downlink_notify();
CREATE TRIGGER device_task_versions_notify AFTER INSERT OR UPDATE OF version ON device_task_versions
    FOR EACH STATEMENT EXECUTE FUNCTION downlink_notify();
