-- Retention: what was purged of an import (its received file, its logs), and when. The
-- import row itself stays, so that the tracking table stays whole.
CREATE TABLE purge (
    id INTEGER PRIMARY KEY,
    import_id INTEGER NOT NULL REFERENCES import(id),
    what TEXT NOT NULL CHECK (what IN ('fichier_recu', 'journaux')),
    purged_at TEXT NOT NULL,
    UNIQUE (import_id, what)
);
