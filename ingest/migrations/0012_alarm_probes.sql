-- Environmental alarms are per device AND probe (issue 9): a sensor with two probes has two
-- series, and one probe's in-range readings must not mask the other's excursion. The probe is
-- also part of the alarm's subject ("device/probe"), so one alarm per (device, probe, type) is active.
ALTER TABLE alarms ADD COLUMN probe text;
