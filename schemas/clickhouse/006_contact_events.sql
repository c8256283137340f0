-- Every event of a contact: those resolved to it when processed, plus the anonymous history of
-- each cookie whose *first* link went to it (events with pre_identification = 1). Events after a
-- re-link belong to the new contact; earlier ones stay. Never another contact's events.
-- Cost: one pass over events plus a hash join against the (small) first-link map of identities.
CREATE VIEW IF NOT EXISTS {db}.contact_events AS
SELECT contact_id, event_id, type, site_id, received_at, client_ts, source, anonymous_id,
       url, path, referrer, title, name, form_id, campaign_id, properties, automated,
       automated_reason, 0 AS from_anonymous_history
FROM {db}.events
WHERE contact_id != ''
UNION ALL
SELECT f.first_contact_id AS contact_id, e.event_id, e.type, e.site_id, e.received_at, e.client_ts,
       e.source, e.anonymous_id, e.url, e.path, e.referrer, e.title, e.name, e.form_id,
       e.campaign_id, e.properties, e.automated, e.automated_reason, 1 AS from_anonymous_history
FROM {db}.events AS e
INNER JOIN
(
    SELECT anonymous_id, argMin(contact_id, at) AS first_contact_id
    FROM {db}.identities
    WHERE contact_id != '' AND previous_contact_id = ''
    GROUP BY anonymous_id
) AS f ON e.anonymous_id = f.anonymous_id
WHERE e.contact_id = '' AND e.pre_identification = 1;
