-- Why a form or identify that named someone was not taken as evidence (CONTRACT §3 "Never
-- link on garbage"; a kiosk's flagged cookie): 'invalid email: <why>', 'cookie_flagged', or ''.
-- The console's contact page shows it beside the event; contact_events is made again with it.
ALTER TABLE {db}.events ADD COLUMN IF NOT EXISTS identity_refused LowCardinality(String) DEFAULT '' AFTER user_agent;

CREATE OR REPLACE VIEW {db}.contact_events AS
SELECT contact_id, event_id, type, site_id, received_at, client_ts, source, anonymous_id,
       user_id, url, path, referrer, title, name, form_id, campaign_id, properties, automated,
       automated_reason, identity_refused, 0 AS from_anonymous_history
FROM {db}.events
WHERE contact_id != ''
UNION ALL
SELECT f.first_contact_id AS contact_id, e.event_id, e.type, e.site_id, e.received_at, e.client_ts,
       e.source, e.anonymous_id, e.user_id, e.url, e.path, e.referrer, e.title, e.name, e.form_id,
       e.campaign_id, e.properties, e.automated, e.automated_reason, e.identity_refused,
       1 AS from_anonymous_history
FROM {db}.events AS e
INNER JOIN
(
    SELECT anonymous_id, argMin(contact_id, at) AS first_contact_id
    FROM {db}.identities
    WHERE contact_id != '' AND previous_contact_id = ''
    GROUP BY anonymous_id
) AS f ON e.anonymous_id = f.anonymous_id
WHERE e.contact_id = '' AND e.pre_identification = 1;
