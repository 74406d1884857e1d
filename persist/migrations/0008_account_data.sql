-- Account data (global and per room, tags included as m.tag): a projection of the
-- account_data stream, the latest value of each (user, room, type) and the stream
-- position that wrote it. room_id is '' for global account data.
CREATE TABLE account_data (
    user_id   TEXT   NOT NULL,
    room_id   TEXT   NOT NULL,
    type      TEXT   NOT NULL,
    content   JSONB  NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_changes ON account_data (user_id, stream_id);
