-- Administration (issue 5, items 1 and 5), sqlite flavour. See docs/storage.md and
-- server/src/storage/auth.rs.

-- A user whose password was set for them (the generated password of the first
-- administrator) must change it before getting any token: the login flow refuses them
-- while this is 1; `mediflow user passwd` clears it.
ALTER TABLE auth_users ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0;
