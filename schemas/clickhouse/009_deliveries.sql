-- Every webhook delivery attempt published on ma.deliveries (ma-pipeline deliver), once per
-- (trigger_id, destination, attempt).
CREATE TABLE IF NOT EXISTS {db}.deliveries
(
    trigger_id      String,
    destination     LowCardinality(String),
    attempt         UInt32,
    status          LowCardinality(String),
    http_status     Nullable(UInt16),
    error           String,
    at              DateTime64(3, 'UTC'),
    next_attempt_at Nullable(DateTime64(3, 'UTC'))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (destination, trigger_id, attempt)
SETTINGS non_replicated_deduplication_window = 1000;
