-- Triggers that did not fire, and why (ma.x.decisions): one row per rule skipped for a
-- subject at an event (or at a delayed trigger's due time). decision = 'skipped'; reason is
-- the rule's blocker: once_per, cancel_if, no_consent, unsubscribed, hard_bounce,
-- suppressed:<crm_status>, frequency_cap, history_too_old, rule_removed, ...
-- What the console's contact and triggers pages show ("suppressed by ...").
CREATE TABLE IF NOT EXISTS {db}.trigger_decisions
(
    contact_id   String,
    anonymous_id String,
    at           DateTime64(3, 'UTC'),
    rule         LowCardinality(String),
    decision     LowCardinality(String),
    reason       LowCardinality(String),
    event_id     String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (contact_id, anonymous_id, at, rule, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
