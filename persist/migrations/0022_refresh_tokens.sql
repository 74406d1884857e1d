-- Refreshable access tokens (login and registration with refresh_token: true), a
-- projection of the accounts stream: an access token may expire, and its device holds
-- one refresh token, by its SHA-256, that POST /refresh exchanges for a new pair.
ALTER TABLE access_tokens ADD COLUMN expires_at TIMESTAMPTZ;
CREATE TABLE refresh_tokens (
    token_hash BYTEA  PRIMARY KEY,
    user_id    TEXT   NOT NULL,
    device_id  TEXT   NOT NULL,
    stream_id  BIGINT NOT NULL,
    FOREIGN KEY (user_id, device_id) REFERENCES devices ON DELETE CASCADE
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
