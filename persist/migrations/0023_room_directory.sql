-- The local room directory's list (PUT /directory/list/room, createRoom's visibility),
-- a projection of the accounts stream keyed by room: the rooms GET /publicRooms lists.
CREATE TABLE room_directory (
    room_id   TEXT    PRIMARY KEY,
    public    BOOLEAN NOT NULL,
    stream_id BIGINT  NOT NULL
);
CREATE INDEX room_directory_public ON room_directory (room_id) WHERE public;
