-- Placeholder: retention (issue 14).
SELECT 1;
