-- To-device messages: a projection of the to_device stream. device_inbox holds the
-- messages waiting for each device, as /sync returns them, with the stream position that
-- appended them; once the device syncs past a position, its rows up to there are deleted
-- (and the messages purged from the log). A device holds a bounded number of them, the
-- oldest dropped past it, as its subject in the log is bounded.
CREATE TABLE device_inbox (
    user_id   TEXT   NOT NULL,
    device_id TEXT   NOT NULL,
    stream_id BIGINT NOT NULL,
    -- {"type", "sender", "content"}, JSON as /sync sends it (checked before it was
    -- appended, so not parsed again here).
    message   TEXT   NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_id)
);

-- The transaction ids each sending device used, so a retry of a /sendToDevice delivers
-- nothing twice; its last transactions are kept, as many as a device's inbox holds.
CREATE TABLE to_device_txns (
    sender    TEXT   NOT NULL,
    device_id TEXT   NOT NULL,
    txn_id    TEXT   NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (sender, device_id, txn_id)
);
CREATE INDEX to_device_txns_order ON to_device_txns (sender, device_id, stream_id);

-- How many rows each device has in device_inbox and in to_device_txns (as the sender),
-- so the bound is kept without counting them at every append. A device with neither
-- has no row.
CREATE TABLE to_device_sizes (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    messages  INT  NOT NULL DEFAULT 0,
    txns      INT  NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id)
);

-- Where each device was last seen from, beside when (Synapse's last_seen_ip); the devices
-- API shows both.
ALTER TABLE devices ADD COLUMN last_seen_ip TEXT;
