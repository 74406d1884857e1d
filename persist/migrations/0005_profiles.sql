-- Users' public profiles. A user without a row has the defaults: their localpart as
-- display name and no avatar.
CREATE TABLE profiles (
    user_id     TEXT PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    displayname TEXT,
    avatar_url  TEXT
);
