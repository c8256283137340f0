-- score_state (004) was created without an insert deduplication window, unlike the other tables
-- the sink writes: a replayed batch added its rows again (invisible through the FINAL view
-- `scores`, but counted by anyone reading the table). Keep the last 1000 insert tokens, as the
-- other tables do.
ALTER TABLE {db}.score_state MODIFY SETTING non_replicated_deduplication_window = 1000;
