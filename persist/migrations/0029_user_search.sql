-- user_directory.search_all_users finds local users who are in no room, and so not in
-- the user directory, by their user ID's words and their display name's.
CREATE INDEX users_search ON users
    USING GIN (to_tsvector('simple'::regconfig, regexp_replace(user_id, '[^[:alnum:]]+', ' ', 'g')));
CREATE INDEX profiles_search ON profiles
    USING GIN (to_tsvector('simple'::regconfig, coalesce(displayname, '')));
