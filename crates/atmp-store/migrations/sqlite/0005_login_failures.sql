-- Failed logins (web and FTPS), by key: an identifier with its address, or an address alone.
-- In the base, so that a lock-out holds across instances and restarts. A key's count starts
-- again once its first failure is older than the blocking window.
CREATE TABLE login_failure (
    key TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    first_at TEXT NOT NULL
);
