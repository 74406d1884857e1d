-- Accounts: users, their devices and access tokens, user-interactive auth sessions and
-- filters. Shared by every gateway, so everything a client may present to another
-- gateway (tokens, UIA sessions, filter ids) lives here rather than in process memory.

CREATE TABLE users (
    user_id       text PRIMARY KEY,
    -- bcrypt hash; NULL for accounts that cannot log in with a password.
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Source of generated localparts for registrations without a username. Numeric
-- localparts are reserved for it, as in Synapse.
CREATE SEQUENCE user_localpart_seq;

CREATE TABLE devices (
    user_id      text NOT NULL REFERENCES users ON DELETE CASCADE,
    device_id    text NOT NULL,
    display_name text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, device_id)
);

-- Only the SHA-256 of a token is stored: a leaked table does not let anyone log in.
CREATE TABLE access_tokens (
    token_hash bytea PRIMARY KEY,
    user_id    text NOT NULL,
    device_id  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (user_id, device_id) REFERENCES devices ON DELETE CASCADE
);
CREATE INDEX access_tokens_device ON access_tokens (user_id, device_id);

CREATE TABLE uia_sessions (
    session_id text PRIMARY KEY,
    -- The operation the session authorises (e.g. "register"), so stages completed for
    -- one endpoint cannot be replayed against another.
    kind       text NOT NULL,
    completed  text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX uia_sessions_created ON uia_sessions (created_at);

CREATE TABLE filters (
    user_id   text NOT NULL REFERENCES users ON DELETE CASCADE,
    filter_id bigint NOT NULL,
    filter    jsonb NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);
