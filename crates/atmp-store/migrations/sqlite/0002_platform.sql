-- atmp base, SQLite, version 2: the platform (users, sessions, jobs, mail outbox).

-- Which job (file received over FTPS) an import belongs to: written in the file's own
-- transaction, so that a restarted worker knows the job's file was already committed.
ALTER TABLE import ADD COLUMN job_id INTEGER;
CREATE UNIQUE INDEX import_job ON import (job_id) WHERE job_id IS NOT NULL;
CREATE INDEX import_started ON import (started_at);

-- The tracking table reads import_log alone: its date and type are copied from the import.
ALTER TABLE import_log ADD COLUMN started_at TEXT NOT NULL DEFAULT '';
ALTER TABLE import_log ADD COLUMN type_fichier TEXT;
UPDATE import_log SET started_at = (SELECT started_at FROM import WHERE import.id = import_log.import_id),
                      type_fichier = (SELECT type_fichier FROM import WHERE import.id = import_log.import_id);
CREATE INDEX import_log_started ON import_log (started_at, id);
CREATE INDEX import_log_siret_started ON import_log (collectivite_siret, started_at, id);

CREATE TABLE utilisateur (
    id INTEGER PRIMARY KEY,
    login TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('plateforme', 'cdg', 'collectivite-admin', 'collectivite')),
    collectivite_id INTEGER REFERENCES collectivite(id),
    email TEXT,
    -- The password was set by someone else (first start, creation): change it at next login.
    doit_changer INTEGER NOT NULL DEFAULT 0,
    actif INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL
);

-- Web sessions: the cookie holds a random token; only its SHA-256 is stored.
CREATE TABLE session (
    token_sha256 TEXT PRIMARY KEY,
    utilisateur_id INTEGER NOT NULL REFERENCES utilisateur(id) ON DELETE CASCADE,
    csrf TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX session_utilisateur ON session (utilisateur_id);

-- Files received over FTPS, one job each. 'attente' → 'en_cours' → 'fait'.
CREATE TABLE job (
    id INTEGER PRIMARY KEY,
    emetteur TEXT NOT NULL,
    file_name TEXT NOT NULL,
    -- The file as received, kept read-only.
    stored_path TEXT NOT NULL UNIQUE,
    size INTEGER NOT NULL,
    sha256 TEXT,
    received_at TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('attente', 'en_cours', 'fait')),
    attempts INTEGER NOT NULL DEFAULT 0,
    import_id INTEGER REFERENCES import(id),
    last_error TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX job_state ON job (state, id);

-- Mails to send after an import (the outbox): retried until sent or given up.
CREATE TABLE mail (
    id INTEGER PRIMARY KEY,
    import_id INTEGER NOT NULL REFERENCES import(id),
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    -- JSON list of [file name, log path] to attach (NIR masked when attached).
    attachments TEXT NOT NULL DEFAULT '[]',
    state TEXT NOT NULL CHECK (state IN ('attente', 'envoye', 'abandonne')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error TEXT,
    sent_at TEXT,
    UNIQUE (import_id, recipient)
);
CREATE INDEX mail_due ON mail (state, next_attempt_at);
