-- Pushers (POST /pushers/set), a projection of the accounts stream: one per user,
-- app_id and pushkey. device_id is the device that set it: the pusher goes with the
-- device's deletion and with its access token (a new login as the device replaces it).
-- data is kept as the client sent it (json, not jsonb).
CREATE TABLE pushers (
    user_id             TEXT   NOT NULL,
    app_id              TEXT   NOT NULL,
    pushkey             TEXT   NOT NULL,
    device_id           TEXT   NOT NULL,
    kind                TEXT   NOT NULL,
    app_display_name    TEXT   NOT NULL,
    device_display_name TEXT   NOT NULL,
    profile_tag         TEXT   NOT NULL,
    lang                TEXT   NOT NULL,
    data                JSON   NOT NULL,
    pushkey_ts          BIGINT NOT NULL,
    stream_id           BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_pushkey ON pushers (app_id, pushkey);

-- The last set of each app_id and pushkey without append, which took the pushkey from
-- every other user. Users' writers project in their own time: a set of another user
-- projected after a later claim must store nothing, as in log order.
CREATE TABLE pushkey_claims (
    app_id    TEXT   NOT NULL,
    pushkey   TEXT   NOT NULL,
    user_id   TEXT   NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey)
);

-- The position of the last deletion of each user's app_id and pushkey (kind null, or
-- the device that set it deleted or given a new token). A set of the same key projected
-- again after it (a replay into a database that has the rows) stores nothing, even when
-- the deletion went through a device other than the one in the older set.
CREATE TABLE pusher_tombstones (
    user_id   TEXT   NOT NULL,
    app_id    TEXT   NOT NULL,
    pushkey   TEXT   NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
