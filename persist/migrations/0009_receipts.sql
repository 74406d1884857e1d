-- Receipts (m.read and m.read.private): a projection of the receipts stream, the latest
-- receipt of each (room, receipt type, user, thread) and the stream position that wrote
-- it. thread_id is '' for an unthreaded receipt. event_seq and event_idx are the
-- receipt's event's position in the EVENTS log, so a receipt for an older event can be
-- ignored without reading events.
CREATE TABLE receipts (
    room_id      TEXT   NOT NULL,
    receipt_type TEXT   NOT NULL,
    user_id      TEXT   NOT NULL,
    thread_id    TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    event_seq    BIGINT NOT NULL,
    event_idx    INT    NOT NULL,
    ts           BIGINT NOT NULL,
    stream_id    BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
-- /sync reads what changed in the user's rooms between two positions.
CREATE INDEX receipts_changes ON receipts (room_id, stream_id);
