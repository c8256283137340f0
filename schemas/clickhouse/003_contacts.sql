-- Every version of every merged contact (ma.contacts); `contacts` below is the current one.
-- Attribute values are text: attributes['title'].
CREATE TABLE IF NOT EXISTS {db}.contact_versions
(
    contact_id    String,
    email         String,
    attributes    Map(String, String),
    consent_email UInt8,
    crm_status    LowCardinality(String),
    crm_id        String,
    created_at    Nullable(DateTime64(3, 'UTC')),
    updated_at    DateTime64(3, 'UTC'),
    deleted       UInt8
)
ENGINE = ReplacingMergeTree(updated_at, deleted)
ORDER BY contact_id
SETTINGS non_replicated_deduplication_window = 1000;

-- Current attributes, consent, crm_status and created_at of each contact. FINAL is needed here
-- (a contact changes over time); ClickHouse applies it per partition, cheaply, on this table.
CREATE VIEW IF NOT EXISTS {db}.contacts AS
SELECT contact_id, email, attributes, consent_email, crm_status, crm_id, created_at, updated_at
FROM {db}.contact_versions FINAL
WHERE deleted = 0;
