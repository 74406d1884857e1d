-- Which events log this database is a projection of: the JetStream stream's name and
-- its creation time. A database is refused against any other log (a deleted or
-- restored NATS store, another deployment's bus), whose sequences would not match.
CREATE TABLE log_identity (
    only_row      BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    stream_name   TEXT NOT NULL,
    created_ns    BIGINT NOT NULL
);
