-- Full-text search over rooms' messages (POST /search), a projection of the events log
-- beside events: one row per m.room.message body, m.room.name and m.room.topic, with
-- its text as an English tsvector (Synapse's choice), removed when the event is
-- redacted.
CREATE TABLE event_search (
    event_id TEXT     PRIMARY KEY,
    room_id  TEXT     NOT NULL,
    key      TEXT     NOT NULL,
    vector   TSVECTOR NOT NULL,
    seq      BIGINT   NOT NULL,
    idx      INT      NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
CREATE INDEX event_search_room ON event_search (room_id, seq, idx);

INSERT INTO event_search (event_id, room_id, key, vector, seq, idx)
SELECT event_id, room_id, key, to_tsvector('english', value), seq, idx FROM (
    SELECT e.event_id, e.room_id, e.seq, e.idx,
        CASE e.type WHEN 'm.room.message' THEN 'content.body' WHEN 'm.room.name' THEN 'content.name' ELSE 'content.topic' END AS key,
        CASE e.type WHEN 'm.room.message' THEN c ->> 'body' WHEN 'm.room.name' THEN c ->> 'name' ELSE c ->> 'topic' END AS value
    FROM (SELECT *, json::jsonb -> 'content' AS c FROM events
          WHERE redacted_by IS NULL AND type IN ('m.room.message', 'm.room.name', 'm.room.topic')) e) x
WHERE value IS NOT NULL
ON CONFLICT DO NOTHING;
