-- Local media (the media repository), a projection of the accounts stream. A row is
-- made by a reservation (POST /media/v1/create: sha256 NULL until the upload) or by an
-- upload. The content is the file named by sha256 in media_store_path, shared by every
-- upload of the same bytes; thumbnails are files derived from it, kept beside it, and
-- have no rows.
CREATE TABLE media (
    media_id      TEXT        PRIMARY KEY,
    user_id       TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    -- When an unused reservation lapses; NULL once uploaded.
    expires_at    TIMESTAMPTZ,
    content_type  TEXT,
    upload_name   TEXT,
    size          BIGINT,
    sha256        TEXT,
    authenticated BOOLEAN     NOT NULL,
    stream_id     BIGINT      NOT NULL
);
-- Quotas read a user's uploads by time, and reservations count the unused ones.
CREATE INDEX media_user_created ON media (user_id, created_at);
