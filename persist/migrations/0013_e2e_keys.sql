-- End-to-end encryption keys, device-list changes and key backups: a projection of the
-- device_lists stream. stream_id is the position of the record that wrote a row; rows
-- only ever move forward by it. Key objects are kept as the text that was verified
-- (canonical JSON), not JSONB, since clients check signatures over them.

-- Each device's signed identity keys.
CREATE TABLE e2e_device_keys (
    user_id   TEXT   NOT NULL,
    device_id TEXT   NOT NULL,
    key_json  TEXT   NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys; a claim deletes its key. Claims take the oldest first.
CREATE TABLE e2e_one_time_keys (
    user_id   TEXT   NOT NULL,
    device_id TEXT   NOT NULL,
    algorithm TEXT   NOT NULL,
    key_id    TEXT   NOT NULL,
    key_json  TEXT   NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);
CREATE INDEX e2e_one_time_keys_oldest ON e2e_one_time_keys (user_id, device_id, algorithm, stream_id, key_id);

-- One fallback key per device and algorithm; claims mark it used and leave it.
CREATE TABLE e2e_fallback_keys (
    user_id   TEXT    NOT NULL,
    device_id TEXT    NOT NULL,
    algorithm TEXT    NOT NULL,
    key_id    TEXT    NOT NULL,
    key_json  TEXT    NOT NULL,
    used      BOOLEAN NOT NULL,
    stream_id BIGINT  NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- The latest cross-signing key of each type (master, self_signing, user_signing).
CREATE TABLE e2e_cross_signing_keys (
    user_id   TEXT   NOT NULL,
    key_type  TEXT   NOT NULL,
    key_json  TEXT   NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded apart from the keys they sign: by user_id's key key_id, of
-- target_id (a device ID or a cross-signing public key) of target_user_id.
CREATE TABLE e2e_cross_signing_signatures (
    user_id        TEXT   NOT NULL,
    key_id         TEXT   NOT NULL,
    target_user_id TEXT   NOT NULL,
    target_id      TEXT   NOT NULL,
    signature      TEXT   NOT NULL,
    stream_id      BIGINT NOT NULL,
    PRIMARY KEY (target_user_id, target_id, user_id, key_id)
);

-- The change log /sync device_lists and /keys/changes read: user_id's device device_id
-- (or a cross-signing key) changed at stream_id. viewer is '' for a change every user
-- sharing a room sees, or the one user who sees it (a signature they made of user_id's
-- master key).
CREATE TABLE device_list_changes (
    stream_id BIGINT NOT NULL,
    user_id   TEXT   NOT NULL,
    device_id TEXT   NOT NULL,
    viewer    TEXT   NOT NULL,
    PRIMARY KEY (stream_id, user_id, device_id, viewer)
);
CREATE INDEX device_list_changes_viewer ON device_list_changes (viewer, stream_id) WHERE viewer <> '';

-- Key backup versions: numbered per user from 1, never reused; a deleted version keeps
-- its row (deleted) so its number is not handed out again.
CREATE TABLE e2e_room_keys_versions (
    user_id   TEXT    NOT NULL,
    version   BIGINT  NOT NULL,
    algorithm TEXT    NOT NULL,
    auth_data TEXT    NOT NULL,
    etag      BIGINT  NOT NULL,
    deleted   BOOLEAN NOT NULL,
    stream_id BIGINT  NOT NULL,
    PRIMARY KEY (user_id, version)
);

-- The session keys of each backup version.
CREATE TABLE e2e_room_keys (
    user_id             TEXT    NOT NULL,
    version             BIGINT  NOT NULL,
    room_id             TEXT    NOT NULL,
    session_id          TEXT    NOT NULL,
    first_message_index BIGINT  NOT NULL,
    forwarded_count     BIGINT  NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    session_data        TEXT    NOT NULL,
    stream_id           BIGINT  NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);
