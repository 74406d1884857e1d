-- Room projections of the EVENTS log. Every row is derived from log messages and can be
-- rebuilt by replaying the log into an empty database; stream_positions records, in the
-- same transaction as the rows, how far each writer's projection has got.

CREATE TABLE rooms (
    room_id          TEXT PRIMARY KEY,
    room_version     TEXT   NOT NULL,
    creator          TEXT   NOT NULL,
    -- EVENTS stream sequence of the room's last log message: the expected last subject
    -- sequence of its next append.
    last_seq         BIGINT NOT NULL,
    -- The DAG tip (forward extremity) and its depth, for the next event's prev_events.
    last_event_id    TEXT   NOT NULL,
    depth            BIGINT NOT NULL
);

CREATE TABLE events (
    event_id         TEXT PRIMARY KEY,
    room_id          TEXT   NOT NULL,
    -- Position in the global order: log sequence, then index inside the log message.
    seq              BIGINT NOT NULL,
    idx              INT    NOT NULL,
    type             TEXT   NOT NULL,
    state_key        TEXT,
    sender           TEXT   NOT NULL,
    membership       TEXT,
    depth            BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    -- The signed event exactly as appended (TEXT, not JSONB: signatures cover the bytes'
    -- canonical form and JSONB would reorder and renumber).
    json             TEXT   NOT NULL,
    redacted_by      TEXT,
    -- Sending device and transaction id, for unsigned.transaction_id in /sync.
    device_id        TEXT,
    txn_id           TEXT,
    UNIQUE (room_id, seq, idx)
);
CREATE INDEX events_seq ON events (seq);
CREATE INDEX events_member_target ON events (state_key, seq) WHERE type = 'm.room.member';
-- State of a room at a position: the last event of each (type, state_key) up to it.
CREATE INDEX events_state_history ON events (room_id, type, state_key, seq, idx) WHERE state_key IS NOT NULL;

CREATE TABLE current_state (
    room_id    TEXT   NOT NULL,
    type       TEXT   NOT NULL,
    state_key  TEXT   NOT NULL,
    event_id   TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    idx        INT    NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_user_rooms ON current_state (state_key, membership) WHERE type = 'm.room.member';

-- What each intent produced, so a redelivered or retried intent gets its first answer.
CREATE TABLE intent_results (
    intent_id TEXT PRIMARY KEY,
    room_id   TEXT   NOT NULL,
    seq       BIGINT NOT NULL,
    event_ids TEXT[] NOT NULL
);

-- Per writer, the log sequence up to which its events are all projected (Synapse's
-- table name and columns, so operators' queries keep working).
CREATE TABLE stream_positions (
    stream_name   TEXT   NOT NULL,
    instance_name TEXT   NOT NULL,
    stream_id     BIGINT NOT NULL,
    PRIMARY KEY (stream_name, instance_name)
);
