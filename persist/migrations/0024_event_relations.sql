-- Relations between events (m.relates_to with a rel_type: threads, edits, references,
-- annotations), a projection of the events log beside events: one row per relating
-- event, removed when it is redacted. Relations, threads and the aggregations bundled in
-- unsigned.m.relations read it.
CREATE TABLE event_relations (
    event_id   TEXT   PRIMARY KEY,
    relates_to TEXT   NOT NULL,
    rel_type   TEXT   NOT NULL,
    room_id    TEXT   NOT NULL,
    type       TEXT   NOT NULL,
    sender     TEXT   NOT NULL,
    seq        BIGINT NOT NULL,
    idx        INT    NOT NULL
);
CREATE INDEX event_relations_target ON event_relations (relates_to, seq, idx);
CREATE INDEX event_relations_threads ON event_relations (room_id, seq, idx) WHERE rel_type = 'm.thread';

INSERT INTO event_relations (event_id, relates_to, rel_type, room_id, type, sender, seq, idx)
SELECT event_id, rel ->> 'event_id', rel ->> 'rel_type', room_id, type, sender, seq, idx
FROM (SELECT e.*, e.json::jsonb -> 'content' -> 'm.relates_to' AS rel FROM events e
      WHERE e.redacted_by IS NULL AND e.json LIKE '%m.relates_to%') x
WHERE jsonb_typeof(rel) = 'object' AND jsonb_typeof(rel -> 'event_id') = 'string' AND jsonb_typeof(rel -> 'rel_type') = 'string'
ON CONFLICT DO NOTHING;
