-- The room directory: local aliases and the room each points to. Server-local data,
-- not a projection of the events log (the m.room.canonical_alias event is).
CREATE TABLE room_aliases (
    alias   TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
