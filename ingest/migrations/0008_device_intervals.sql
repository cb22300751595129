-- A device is offline after a multiple of its own expected interval (learned from the spacing of
-- its messages in device time), not after one number for every kind of device.
ALTER TABLE device_state ADD COLUMN expected_interval_s double precision;

CREATE FUNCTION device_silence_limit_s(expected_interval_s double precision, multiple double precision,
                                       fallback_s double precision)
RETURNS double precision LANGUAGE sql IMMUTABLE AS $$
    -- Unknown interval: the fallback. A floor of 60 s keeps a chatty device's short gap from
    -- counting as an outage.
    SELECT greatest(60, coalesce(expected_interval_s * multiple, fallback_s))
$$;
