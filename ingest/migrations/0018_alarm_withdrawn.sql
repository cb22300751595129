-- An alarm whose episode late data showed never happened, but that a person acted on
-- (acknowledged, or worked its ticket), is kept for the audit trail as 'withdrawn': a state the
-- rules never derive, listed by the API only on request (core/withdrawal.py). One nobody acted on
-- is deleted with its untouched automatic ticket.
ALTER TABLE alarms DROP CONSTRAINT IF EXISTS alarms_state_check;
ALTER TABLE alarms ADD CONSTRAINT alarms_state_check CHECK (state IN ('active', 'cleared', 'withdrawn'));
