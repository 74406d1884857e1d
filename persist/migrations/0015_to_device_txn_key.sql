-- A retry's lookup of its transaction id must go to the one row it names. With the key
-- (sender, device_id, txn_id) beside the pruning order (sender, device_id, stream_id),
-- Postgres without statistics yet (a young table) picks either, and the second reads
-- every transaction of the sending device: 15 ms a batch at 1,500 per device. One
-- column holds the whole key instead, so only its index matches the lookup. The lengths
-- in front keep it unambiguous whatever the ids contain.
ALTER TABLE to_device_txns DROP CONSTRAINT to_device_txns_pkey;
ALTER TABLE to_device_txns ADD COLUMN txn_key TEXT GENERATED ALWAYS AS (
    length(sender)::text || ' ' || length(device_id)::text || ' ' || sender || device_id || txn_id) STORED;
ALTER TABLE to_device_txns ADD PRIMARY KEY (txn_key);
