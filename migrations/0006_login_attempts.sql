-- Password attempts per username, counted *before* the hash is checked, so that concurrent guesses
-- on any number of instances each take a distinct number and parallelism buys nothing.
-- Keyed by lower(username) whether or not such a user exists, so unknown names behave the same.
-- Replaces users.failed_logins / first_failure_at / locked_until, which are no longer read.
CREATE TABLE login_attempts (
    username_key  text PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    attempts      integer NOT NULL,      -- checks reserved in this window, minus those that succeeded
    locked_until  timestamptz
);
CREATE INDEX login_attempts_stale ON login_attempts (window_start);

-- Locks and failures already recorded stay in force across the upgrade.
INSERT INTO login_attempts (username_key, window_start, attempts, locked_until)
SELECT lower(username), COALESCE(first_failure_at, now()), failed_logins, locked_until
FROM users
WHERE deleted_at IS NULL AND (failed_logins > 0 OR locked_until > now())
ON CONFLICT (username_key) DO NOTHING;
