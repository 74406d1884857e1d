-- Content of deleted media that no other media names (a projection of the accounts
-- stream's media_deleted records): the media jobs delete each file once it has been an
-- orphan for an hour and nothing names it again, then its row.
CREATE TABLE media_orphans (
    sha256 TEXT PRIMARY KEY,
    since  TIMESTAMPTZ NOT NULL
);
