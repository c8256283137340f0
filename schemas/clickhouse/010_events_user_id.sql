-- The site's own id of the person (Segment's userId, CONTRACT §2): '' when the call had none.
-- contact_events shows it too, so the view is made again with the column.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS user_id String DEFAULT '' AFTER contact_id;

CREATE OR REPLACE VIEW {db}.contact_events AS
SELECT contact_id, event_id, type, site_id, received_at, client_ts, source, anonymous_id,
       user_id, url, path, referrer, title, name, form_id, campaign_id, properties, automated,
       automated_reason, 0 AS from_anonymous_history
FROM {db}.events
WHERE contact_id != ''
UNION ALL
SELECT f.first_contact_id AS contact_id, e.event_id, e.type, e.site_id, e.received_at, e.client_ts,
       e.source, e.anonymous_id, e.user_id, e.url, e.path, e.referrer, e.title, e.name, e.form_id,
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
