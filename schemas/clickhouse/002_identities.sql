-- Every link, re-link and unlink decision (ma.identities). contact_id '' is an unlink.
CREATE TABLE IF NOT EXISTS {db}.identities
(
    anonymous_id        String,
    contact_id          String,
    previous_contact_id String,
    reason              LowCardinality(String),
    event_id            String,
    at                  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (anonymous_id, at, contact_id, reason)
SETTINGS non_replicated_deduplication_window = 1000;
