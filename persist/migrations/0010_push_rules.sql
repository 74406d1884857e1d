-- Push rules: a projection of the push_rules stream, each user's own rules and their
-- changes to the server-default rules (schemas/pushrules.State) as of the stream
-- position that wrote them. A user without a row has the server-default rules alone.
CREATE TABLE user_push_rules (
    user_id   TEXT   PRIMARY KEY,
    rules     JSONB  NOT NULL,
    stream_id BIGINT NOT NULL
);
