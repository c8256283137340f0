-- One row per event_id, with contact_id as resolved by the stitching worker when it processed the
-- event ('' while the cookie was anonymous). pre_identification = 1 marks anonymous events from
-- before the cookie's first link: contact_events gives those to the contact of that first link.
-- Rows are written exactly once (the sink deduplicates replays), so no FINAL is needed.
CREATE TABLE IF NOT EXISTS {db}.events
(
    event_id           String,
    type               LowCardinality(String),
    site_id            LowCardinality(String),
    received_at        DateTime64(3, 'UTC'),
    client_ts          Nullable(DateTime64(3, 'UTC')),
    source             LowCardinality(String),
    anonymous_id       String,
    contact_id         String,
    pre_identification UInt8,
    url                String,
    path               String,
    referrer           String,
    title              String,
    name               String,
    form_id            String,
    campaign_id        String,
    properties         String CODEC(ZSTD(3)),
    automated          UInt8,
    automated_reason   LowCardinality(String),
    user_agent         String CODEC(ZSTD(3)),
    INDEX idx_anonymous_id anonymous_id TYPE bloom_filter GRANULARITY 4,
    INDEX idx_event_id event_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (contact_id, received_at, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
