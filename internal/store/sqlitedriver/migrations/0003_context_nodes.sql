-- Playbook context: the values assigned with `set`, a JSON object stored as
-- TEXT byte for byte; NULL until the first set.
ALTER TABLE executions ADD COLUMN context TEXT;
