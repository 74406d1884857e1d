-- Rooms purged by the admin API (a projection of the events log's purged batches):
-- the receipts and account data projections leave their records of these rooms out.
CREATE TABLE purged_rooms (
    room_id TEXT PRIMARY KEY,
    seq     BIGINT NOT NULL
);

-- Rooms the admin API blocked (a projection of the accounts stream): local users may
-- not join, knock on or be invited to them.
CREATE TABLE blocked_rooms (
    room_id   TEXT PRIMARY KEY,
    blocked_by TEXT NOT NULL,
    stream_id BIGINT NOT NULL
);
