-- Users deactivated with erase (a projection of the accounts stream): their events are
-- served redacted to those who were not in the room when they were sent.
ALTER TABLE users ADD COLUMN erased BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX users_erased ON users (user_id) WHERE erased;
