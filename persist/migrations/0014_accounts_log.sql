-- Accounts, devices, access tokens, profiles, filters, forgotten rooms and room aliases
-- become projections of the accounts stream. stream_id is the position of the record
-- that last wrote a row: a record never changes a row written after it, so projecting
-- an older record again cannot move a value back. Creation times come from the
-- records, so a replay rebuilds them; devices.last_seen does not (token lookups bump
-- it, it is not user data).
ALTER TABLE users ADD COLUMN stream_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN stream_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE access_tokens ADD COLUMN stream_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE profiles ADD COLUMN stream_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE filters ADD COLUMN stream_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE forgotten_rooms ADD COLUMN stream_id BIGINT NOT NULL DEFAULT 0;
ALTER TABLE room_aliases ADD COLUMN stream_id BIGINT NOT NULL DEFAULT 0;

-- The writes of the accounts stream that changed something, with what their writer
-- answered: a write handled again (a gateway resending it, a batch retried after a
-- failure) gets its first answer instead of being decided again against its own
-- effect (a registration would find its user ID taken).
CREATE TABLE account_writes (
    write_id  TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    answer    JSONB
);
