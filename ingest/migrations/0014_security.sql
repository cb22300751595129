-- Security (issue 10): token expiry and last use, the audit log of API writes, stream tickets.

-- Expiry is optional (NULL: never); last_used_at is refreshed at most once a minute per token.
ALTER TABLE api_tokens ADD COLUMN expires_at timestamptz, ADD COLUMN last_used_at timestamptz;

-- Every write through the API: who (token id, label, role), when, what (method, path, status), the
-- request body, and the resource before and after where the API has a GET for it. Bodies are
-- bounded by the API (16 KiB each); rows are append-only.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    token_id    bigint REFERENCES api_tokens (id) ON DELETE SET NULL,
    actor       text NOT NULL,
    role        text NOT NULL,
    method      text NOT NULL,
    path        text NOT NULL,
    status      integer NOT NULL,
    request     jsonb,
    before      jsonb,
    after       jsonb
);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);

-- Short-lived, single-use tickets for the dashboard's EventSource, so that no long-lived API token
-- ever appears in a URL (proxy and server logs, browser history). Only a hash is stored.
CREATE TABLE stream_tickets (
    ticket_hash text PRIMARY KEY,
    token_id    bigint NOT NULL REFERENCES api_tokens (id) ON DELETE CASCADE,
    expires_at  timestamptz NOT NULL
);
