-- Notifications: the events that notify a local user under their push rules, a
-- projection of the EVENTS log made by the pusher instance the user is sharded to
-- (processors/pusher), with its position in stream_positions ('pusher', instance).
-- thread_id is the thread root's event ID, or 'main' for the main timeline (Synapse's
-- name). seq and idx are the event's position in the log.
CREATE TABLE event_push_actions (
    user_id   TEXT    NOT NULL,
    event_id  TEXT    NOT NULL,
    room_id   TEXT    NOT NULL,
    seq       BIGINT  NOT NULL,
    idx       INT     NOT NULL,
    thread_id TEXT    NOT NULL,
    highlight BOOLEAN NOT NULL,
    actions   JSON    NOT NULL,
    ts        BIGINT  NOT NULL,
    -- An event's position names it: the key also serves /notifications (newest first)
    -- and delivery (oldest first after a position).
    PRIMARY KEY (user_id, seq, idx)
);
-- A read receipt counts a user's notifications in a room again.
CREATE INDEX event_push_actions_room ON event_push_actions (user_id, room_id, seq, idx);

-- How far each pusher's notifications were delivered to its push gateway: bookkeeping of
-- the pusher role, written straight to Postgres like devices.last_seen (a replay sets
-- every pusher at the end of the log, so nothing is delivered twice).
CREATE TABLE pusher_delivery (
    user_id TEXT   NOT NULL,
    app_id  TEXT   NOT NULL,
    pushkey TEXT   NOT NULL,
    seq     BIGINT NOT NULL,
    idx     INT    NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);

-- Each user's notifications after their read receipts, per room and thread: what /sync
-- shows, kept as notifications are stored (after the receipts) and counted again from
-- event_push_actions when a read receipt moves. Both take the user's advisory lock, so
-- neither misses the other.
CREATE TABLE notification_counts (
    user_id       TEXT NOT NULL,
    room_id       TEXT NOT NULL,
    thread_id     TEXT NOT NULL,
    notifications INT  NOT NULL,
    highlights    INT  NOT NULL,
    PRIMARY KEY (user_id, room_id, thread_id)
);
