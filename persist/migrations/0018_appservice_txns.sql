-- Each application service's transactions (processors/appservice): the last
-- transaction ID used, and the transaction sent and not yet answered 200, resent with
-- the same ID and body until it is. Bookkeeping of the sender role, written straight to
-- Postgres like pusher_delivery: delivered_seq/idx is how far the events log was
-- delivered, and the sender's durable consumer keeps the same position in JetStream.
CREATE TABLE appservice_txns (
    service_id     TEXT   PRIMARY KEY,
    last_txn_id    BIGINT NOT NULL,
    delivered_seq  BIGINT NOT NULL,
    delivered_idx  INT    NOT NULL,
    pending_txn_id BIGINT,
    pending_body   BYTEA,
    pending_seq    BIGINT,
    pending_idx    INT
);
