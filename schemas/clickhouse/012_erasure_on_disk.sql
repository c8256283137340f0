-- Erasure (ma-pipeline forget) rewrites the parts that held a person (ALTER TABLE ... DELETE,
-- waited for); the parts they were in are removed once outdated for old_parts_lifetime
-- (ClickHouse's default: 8 minutes) and the next cleanup (about 30 s). 30 s here, so that a
-- person's bytes leave the disk within about a minute of the erasure. The default protects
-- merged parts not yet synced to disk against a power loss in those minutes; the tables
-- here can be rebuilt from their topics.
ALTER TABLE {db}.events MODIFY SETTING old_parts_lifetime = 30;
ALTER TABLE {db}.identities MODIFY SETTING old_parts_lifetime = 30;
ALTER TABLE {db}.contact_versions MODIFY SETTING old_parts_lifetime = 30;
ALTER TABLE {db}.score_changes MODIFY SETTING old_parts_lifetime = 30;
ALTER TABLE {db}.score_state MODIFY SETTING old_parts_lifetime = 30;
ALTER TABLE {db}.triggers MODIFY SETTING old_parts_lifetime = 30;
ALTER TABLE {db}.trigger_decisions MODIFY SETTING old_parts_lifetime = 30;
