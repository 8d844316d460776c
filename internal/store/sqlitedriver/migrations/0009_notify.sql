-- Placeholder: a command's pending notification as a state of its row (issue 14).
SELECT 1;
