-- The user directory (processors/userdir), a projection of the events log by the
-- instance update_user_directory_from_worker names, with its position in
-- stream_positions ('user_directory', instance).
--
-- Every user ever joined to a room, with the name and avatar the directory shows: a
-- local user's profile, a remote user's latest member event. search is what
-- POST /user_directory/search matches, word prefixes of the user ID's parts and of the
-- display name.
CREATE TABLE user_directory (
    user_id      TEXT PRIMARY KEY,
    display_name TEXT,
    avatar_url   TEXT,
    -- Whether the user is in a room of user_directory_rooms_public, computed again at
    -- every change of their rooms or of a room's flags: anyone may find them.
    in_public_room BOOLEAN NOT NULL DEFAULT false,
    search       TSVECTOR GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
            regexp_replace(user_id, '[^[:alnum:]]+', ' ', 'g') || ' ' || coalesce(display_name, ''))
    ) STORED
);
CREATE INDEX user_directory_search ON user_directory USING GIN (search);

-- Who is joined to which room.
CREATE TABLE user_directory_rooms (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
CREATE INDEX user_directory_rooms_room ON user_directory_rooms (room_id);

-- Rooms whose members anyone may find: join rule public, or history world_readable.
CREATE TABLE user_directory_rooms_public (
    room_id        TEXT    PRIMARY KEY,
    public_join    BOOLEAN NOT NULL DEFAULT false,
    world_readable BOOLEAN NOT NULL DEFAULT false
);
