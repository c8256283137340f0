-- Every trigger published on ma.triggers, once per trigger_id.
CREATE TABLE IF NOT EXISTS {db}.triggers
(
    trigger_id      String,
    rule            LowCardinality(String),
    channel         LowCardinality(String),
    contact_id      String,
    anonymous_id    String,
    fired_at        DateTime64(3, 'UTC'),
    due_at          DateTime64(3, 'UTC'),
    score           Float64,
    cause_event_ids Array(String),
    attributes      String CODEC(ZSTD(3))
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(fired_at)
ORDER BY (rule, trigger_id)
SETTINGS non_replicated_deduplication_window = 1000;
