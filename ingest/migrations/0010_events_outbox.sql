-- Live events (GET /api/v1/events/stream): an outbox written by triggers, so ingest and the API
-- need no code to publish, and a NOTIFY that wakes every API process's listeners.
--
-- Ordering: an event's id must never become visible after a larger id, or a client resuming
-- from Last-Event-ID (id > last) would skip it. A plain sequence does not give that: two ingest
-- workers take ids in one order and commit in the other. So the triggers are DEFERRED to commit
-- time and take a transaction-level advisory lock before they take their ids: ids are handed out
-- in commit order. The lock is held only from the pre-commit trigger run to the commit itself
-- (a few milliseconds), never while a batch does its real work, so ingest workers still run in
-- parallel. The lock is released after the commit is visible to new snapshots, so whoever sees
-- id N also sees every id below N that will ever exist.
CREATE TABLE events_outbox (
    id       bigserial PRIMARY KEY,
    ts       timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind     text NOT NULL,          -- movement, alarm, shipment_event, shipment, device
    payload  jsonb NOT NULL
);
-- Retention deletes by age (7 days); ts grows with id, so a BRIN index is enough.
CREATE INDEX events_outbox_ts_brin ON events_outbox USING brin (ts);

CREATE FUNCTION events_outbox_publish() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    outbox_id bigint;
    body jsonb;
BEGIN
    -- The key is arbitrary but fixed: 'cargotrace_events' as a 64-bit constant.
    PERFORM pg_advisory_xact_lock(7202640381452963841);
    -- IF, not one CASE: PL/pgSQL parses each statement on first use, and a CASE naming NEW.ref
    -- would fail on tables without that column.
    IF TG_ARGV[0] = 'shipment' THEN
        -- Status changes only: the shipment row also holds the public token, which stays out of
        -- the stream.
        body := jsonb_build_object('ref', NEW.ref, 'status', NEW.status, 'previous_status', OLD.status);
    ELSIF TG_ARGV[0] = 'device' AND TG_OP = 'UPDATE' THEN
        body := jsonb_build_object('device_id', NEW.device_id, 'last_seen', NEW.last_seen,
                                   'previous_seen', OLD.last_seen);
    ELSIF TG_ARGV[0] = 'device' THEN
        body := jsonb_build_object('device_id', NEW.device_id, 'last_seen', NEW.last_seen, 'previous_seen', NULL);
    ELSE
        body := to_jsonb(NEW);
    END IF;
    INSERT INTO events_outbox (kind, payload) VALUES (TG_ARGV[0], body) RETURNING id INTO outbox_id;
    PERFORM pg_notify('cargotrace_events', outbox_id::text);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER movements_publish AFTER INSERT ON movements
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION events_outbox_publish('movement');

CREATE CONSTRAINT TRIGGER alarms_publish_insert AFTER INSERT ON alarms
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION events_outbox_publish('alarm');
-- Only changes a person watching cares about; updated_at alone (or a no-op UPDATE) is no event.
CREATE CONSTRAINT TRIGGER alarms_publish_update AFTER UPDATE ON alarms
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN ((OLD.state, OLD.acknowledged, OLD.severity, OLD.peak_value, OLD.cleared_at, OLD.message)
          IS DISTINCT FROM (NEW.state, NEW.acknowledged, NEW.severity, NEW.peak_value, NEW.cleared_at, NEW.message))
    EXECUTE FUNCTION events_outbox_publish('alarm');

CREATE CONSTRAINT TRIGGER shipments_publish_status AFTER UPDATE ON shipments
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION events_outbox_publish('shipment');

-- Device online/offline. Going offline is the absence of writes, so no trigger can see it: that
-- transition is the `device_offline` alarm (opened by the offline sweep, cleared when the device
-- talks again), which reaches the stream through the alarm triggers above. Two cheap hints are
-- added here because they cost nothing on the hot path (ingest upserts device_state once per
-- device per batch, and the WHEN clause is evaluated without calling the function): a device's
-- first message ever, and a message after 10 minutes of silence (the default
-- CARGOTRACE_DEVICE_OFFLINE_AFTER_S; the dashboard re-reads /devices on this event and computes
-- `online` with the configured threshold, so a different setting only changes when the hint fires).
CREATE CONSTRAINT TRIGGER device_state_publish_first AFTER INSERT ON device_state
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION events_outbox_publish('device');
CREATE CONSTRAINT TRIGGER device_state_publish_back AFTER UPDATE ON device_state
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.last_seen >= OLD.last_seen + interval '600 seconds')
    EXECUTE FUNCTION events_outbox_publish('device');

-- Shipment events (status changes, geofence crossings) live in a table created by the shipment
-- tracking migration; the trigger is made here only when that table already exists. A migration
-- that creates the table after this one must create the same trigger itself.
DO $$
BEGIN
    IF to_regclass('shipment_events') IS NOT NULL THEN
        CREATE CONSTRAINT TRIGGER shipment_events_publish AFTER INSERT ON shipment_events
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION events_outbox_publish('shipment_event');
        -- A late position may move a transition's time (one row per shipment and type).
        CREATE CONSTRAINT TRIGGER shipment_events_publish_moved AFTER UPDATE ON shipment_events
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
            WHEN ((OLD.ts, OLD.detail) IS DISTINCT FROM (NEW.ts, NEW.detail))
            EXECUTE FUNCTION events_outbox_publish('shipment_event');
    END IF;
END
$$;
