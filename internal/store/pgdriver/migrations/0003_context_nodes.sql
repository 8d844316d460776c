-- Playbook context (values assigned with `set`) and id-generator nodes for
-- several server processes sharing one database.

-- json, not jsonb, so the document round-trips byte for byte; NULL until the
-- first set.
ALTER TABLE executions ADD COLUMN context json;

-- AllocateNode hands each server process nextval modulo the generator's node
-- count, so processes started one after another get distinct nodes. Starting
-- at 0 gives the first process node 0.
CREATE SEQUENCE millrace_node_seq AS bigint MINVALUE 0 START WITH 0;
