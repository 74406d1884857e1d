-- Rooms a user forgot (POST /rooms/{id}/forget), by the membership event they forgot:
-- a later membership of theirs (a rejoin) is not forgotten. This is user data, like an
-- account, not a projection of the events log.
CREATE TABLE forgotten_rooms (
    user_id  TEXT NOT NULL,
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
