-- OpenID tokens (POST /user/{userId}/openid/request_token), which other servers check
-- with GET /_matrix/federation/v1/openid/userinfo; a projection of the accounts stream.
CREATE TABLE openid_tokens (
	token_hash BYTEA PRIMARY KEY,
	user_id    TEXT NOT NULL,
	expires_at TIMESTAMPTZ NOT NULL,
	stream_id  BIGINT NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_at);
