-- When an alias was taken. A room's writer claims createRoom's alias before the room
-- exists; a claim whose room never came to exist (its create was dead-lettered) is
-- free again once no intent of it can still be handled.
ALTER TABLE room_aliases ADD COLUMN claimed_at TIMESTAMPTZ NOT NULL DEFAULT now();
