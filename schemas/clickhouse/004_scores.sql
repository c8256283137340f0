-- Every score change (ma.scores).
CREATE TABLE IF NOT EXISTS {db}.score_changes
(
    contact_id      String,
    anonymous_id    String,
    score           Float64,
    delta           Float64,
    rule            LowCardinality(String),
    event_id        String,
    lifecycle_stage LowCardinality(String),
    at              DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (contact_id, anonymous_id, at, rule, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- The latest score per contact, as of its last change (anonymous profiles excluded).
CREATE TABLE IF NOT EXISTS {db}.score_state
(
    contact_id      String,
    score           Float64,
    lifecycle_stage LowCardinality(String),
    at              DateTime64(3, 'UTC'),
    deleted         UInt8 DEFAULT 0
)
ENGINE = ReplacingMergeTree(at, deleted)
ORDER BY contact_id;

-- Current score and lifecycle stage per contact. `score` is the value at `as_of` (the last
-- change); scores decay with the rules' half-life, applied exactly by the worker on each change.
CREATE VIEW IF NOT EXISTS {db}.scores AS
SELECT contact_id, score, lifecycle_stage, at AS as_of
FROM {db}.score_state FINAL
WHERE deleted = 0;
