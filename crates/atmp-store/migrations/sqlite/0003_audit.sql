-- The audit trail: who did what, when, from where (logins, failed logins, downloads of logs
-- and receipts, every management change). Read by the platform administrator.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL,
    address TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit (at);
