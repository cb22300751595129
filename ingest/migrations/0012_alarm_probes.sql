-- Environmental alarms are per device AND probe (issue 9): a sensor with two probes has two
-- series, and one probe's in-range readings must not mask the other's excursion. The probe is
-- also part of the alarm's subject ("device/probe"), so one alarm per (device, probe, type) is active.
ALTER TABLE alarms ADD COLUMN probe text;

-- An environmental window starts at each channel's newest reset reading. Humidity is optional:
-- this partial index answers "did this series ever report humidity" with a lookup, so sensors
-- that never do (most of them) cost nothing, whatever the size of their history.
CREATE INDEX env_readings_rh ON env_readings (device_id, ts DESC) WHERE rh_pct IS NOT NULL;
