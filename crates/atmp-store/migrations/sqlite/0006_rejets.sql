-- The quarantine ("rattrapage"): every rejected record kept with the import it came from,
-- the reason as a code, the French message of its log line, and the top-level record it
-- belongs to exactly as read (source_xml; the rejected record itself is source_xml[debut, fin)).
-- A row is open ('a_traiter') until it is replayed or integrated by a later file ('rejoue')
-- or set aside by an administrator ('classe').
CREATE TABLE rejet (
    id INTEGER PRIMARY KEY,
    import_id INTEGER NOT NULL REFERENCES import(id),
    collectivite_siret TEXT NOT NULL,
    niveau TEXT NOT NULL,
    raison TEXT NOT NULL CHECK (raison IN ('identite', 'autre_nir', 'contenu', 'collectivite_inconnue', 'non_autorise', 'hors_cdg')),
    etat TEXT NOT NULL DEFAULT 'a_traiter' CHECK (etat IN ('a_traiter', 'rejoue', 'classe')),
    message TEXT NOT NULL,
    chemin TEXT NOT NULL,
    ligne INTEGER NOT NULL,
    -- The top-level record (agent or service) the rejected one belongs to: its path in the
    -- file, and its XML as read (NULL once purged).
    racine TEXT NOT NULL,
    source_xml TEXT,
    debut INTEGER NOT NULL,
    fin INTEGER NOT NULL,
    -- The record's identity, for closing it when a later file integrates the same record
    -- ('a:<nir>', 'a:<nir>/e:<key>', …).
    cle TEXT NOT NULL,
    -- The keys of every record under it: a later file closes it only when it integrates
    -- them all (JSON array).
    contenu TEXT NOT NULL DEFAULT '[]',
    -- For an identity gap: the two identities (JSON) and the differing fields.
    base TEXT,
    fichier TEXT,
    differences TEXT NOT NULL DEFAULT '[]',
    cree_le TEXT NOT NULL,
    traite_le TEXT,
    traite_par TEXT,
    motif TEXT,
    -- The replay, or the later file, that integrated it.
    rejeu_import_id INTEGER REFERENCES import(id),
    purge_le TEXT
);
CREATE INDEX rejet_import ON rejet (import_id);
CREATE INDEX rejet_ouvert ON rejet (collectivite_siret, etat, cle);

-- A replay is an import of its own, linked to the import whose rejections it replays.
ALTER TABLE import ADD COLUMN rejeu_de INTEGER REFERENCES import(id);

-- Corrections of an agent's identity (the one change of stored data a person may make):
-- who, when, before and after (JSON). Personal data: read by administrators only.
CREATE TABLE agent_correction (
    id INTEGER PRIMARY KEY,
    agent_id INTEGER NOT NULL REFERENCES agent(id),
    collectivite_siret TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    avant TEXT NOT NULL,
    apres TEXT NOT NULL
);

-- The purge may now remove the quarantined records of an import too.
CREATE TABLE purge_v2 (
    id INTEGER PRIMARY KEY,
    import_id INTEGER NOT NULL REFERENCES import(id),
    what TEXT NOT NULL CHECK (what IN ('fichier_recu', 'journaux', 'rejets')),
    purged_at TEXT NOT NULL,
    UNIQUE (import_id, what)
);
INSERT INTO purge_v2 (id, import_id, what, purged_at) SELECT id, import_id, what, purged_at FROM purge;
DROP TABLE purge;
ALTER TABLE purge_v2 RENAME TO purge;
