-- Presence: a projection of the presence stream, the latest announced state of each
-- user (Synapse's presence_stream columns) and the stream position that wrote it.
-- status_msg is NULL when the user has none.
CREATE TABLE presence (
    user_id                   TEXT    PRIMARY KEY,
    state                     TEXT    NOT NULL,
    last_active_ts            BIGINT  NOT NULL,
    last_federation_update_ts BIGINT  NOT NULL,
    last_user_sync_ts         BIGINT  NOT NULL,
    status_msg                TEXT,
    currently_active          BOOLEAN NOT NULL,
    stream_id                 BIGINT  NOT NULL
);
-- Incremental /sync reads the changes in a range of positions.
CREATE INDEX presence_stream ON presence (stream_id);
-- The presence writer restores the users whose timers run: everyone not offline.
CREATE INDEX presence_not_offline ON presence (user_id) WHERE state <> 'offline';
