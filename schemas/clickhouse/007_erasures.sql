-- A record that `ma-pipeline forget` erased someone: when, how much, never the email itself.
CREATE TABLE IF NOT EXISTS {db}.erasures
(
    erasure_id   String,
    contact_hash String,
    requested_at DateTime64(3, 'UTC'),
    rows_deleted UInt64
)
ENGINE = MergeTree
ORDER BY requested_at;
