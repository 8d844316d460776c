-- Issue 15: child playbooks. depth bounds nesting (MILLRACE_MAX_CHILD_DEPTH);
-- parent_command_id and parent_task key a child to the command (and the
-- task of its task list) that started it, so a re-run of that command
-- finds its child instead of starting a second one: the unique index
-- decides between two concurrent starts. parent_attempt records which
-- attempt of the command started it. 0 means none (top-level executions,
-- and children started before this migration). Constant defaults rewrite
-- no rows.
ALTER TABLE executions ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN parent_command_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN parent_attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE executions ADD COLUMN parent_task INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX executions_parent_command_idx ON executions (parent_command_id, parent_task) WHERE parent_command_id <> 0;
