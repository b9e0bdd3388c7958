-- atmp base, SQLite, version 1.
-- Reference data: collectivités, senders, consent register, nomenclatures.
CREATE TABLE collectivite (
    id INTEGER PRIMARY KEY,
    siret TEXT NOT NULL UNIQUE,
    nom TEXT NOT NULL,
    cdg_id INTEGER REFERENCES collectivite(id),
    created_at TEXT NOT NULL
);

CREATE TABLE emetteur (
    id INTEGER PRIMARY KEY,
    code TEXT NOT NULL UNIQUE,
    nom TEXT,
    password_hash TEXT,
    created_at TEXT NOT NULL
);

-- The consent register (§5.3.2): a sender may deliver a collectivité's data only while the
-- collectivité's authorisation is on record with statut 'accordee'.
CREATE TABLE autorisation (
    id INTEGER PRIMARY KEY,
    emetteur_id INTEGER NOT NULL REFERENCES emetteur(id),
    collectivite_id INTEGER NOT NULL REFERENCES collectivite(id),
    statut TEXT NOT NULL CHECK (statut IN ('accordee', 'refusee', 'retiree')),
    date_decision TEXT NOT NULL,
    reference TEXT,
    UNIQUE (emetteur_id, collectivite_id)
);

CREATE TABLE nomenclature (
    nomenclature TEXT NOT NULL,
    code TEXT NOT NULL,
    libelle TEXT NOT NULL,
    PRIMARY KEY (nomenclature, code)
);

CREATE TABLE nomenclature_version (
    id INTEGER PRIMARY KEY,
    version TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    entries INTEGER NOT NULL,
    imported_at TEXT NOT NULL
);

-- One row per file processed, whatever its result.
CREATE TABLE import (
    id INTEGER PRIMARY KEY,
    file_name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    -- SHA-256 of the first MiB: a cheap first test for duplicates.
    head_sha256 TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    emetteur TEXT,
    type_fichier TEXT,
    mode TEXT,
    date_creation TEXT,
    cdg_siret TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    result TEXT NOT NULL CHECK (result IN ('en_cours', 'reussi', 'echoue', 'doublon')),
    label TEXT NOT NULL,
    errors INTEGER NOT NULL DEFAULT 0,
    warnings INTEGER NOT NULL DEFAULT 0,
    counts TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX import_sha256 ON import (sha256, result);
CREATE INDEX import_head ON import (head_sha256, size, result);

CREATE TABLE import_log (
    id INTEGER PRIMARY KEY,
    import_id INTEGER NOT NULL REFERENCES import(id),
    collectivite_siret TEXT NOT NULL,
    global INTEGER NOT NULL DEFAULT 0,
    complet_path TEXT NOT NULL,
    erreurs_path TEXT NOT NULL,
    errors INTEGER NOT NULL,
    warnings INTEGER NOT NULL,
    label TEXT NOT NULL
);
CREATE INDEX import_log_import ON import_log (import_id);
CREATE INDEX import_log_collectivite ON import_log (collectivite_siret);

-- Integrated data. Column names follow atmp-flux's spec tables (spec::columns).
CREATE TABLE service (
    id INTEGER PRIMARY KEY,
    collectivite_id INTEGER NOT NULL REFERENCES collectivite(id),
    code TEXT NOT NULL,
    libelle TEXT,
    import_id INTEGER NOT NULL,
    UNIQUE (collectivite_id, code)
);

CREATE TABLE agent (
    id INTEGER PRIMARY KEY,
    collectivite_id INTEGER NOT NULL REFERENCES collectivite(id),
    nir TEXT NOT NULL,
    matricule TEXT NOT NULL DEFAULT 'X',
    civilite TEXT,
    nom_usuel TEXT NOT NULL,
    nom_patronymique TEXT,
    prenom TEXT NOT NULL,
    date_naissance TEXT NOT NULL,
    sexe TEXT NOT NULL,
    lateralite TEXT,
    regime TEXT,
    no_cnracl TEXT,
    adresse_ligne1 TEXT,
    adresse_ligne2 TEXT,
    adresse_ligne3 TEXT,
    adresse_code_postal TEXT,
    adresse_commune TEXT,
    adresse_pays TEXT,
    date_entree_fp TEXT,
    date_entree_collectivite TEXT,
    date_sortie_collectivite TEXT,
    grade TEXT,
    type_personnel TEXT,
    date_entree_metier TEXT,
    service_id INTEGER REFERENCES service(id),
    nom_norm TEXT NOT NULL,
    prenom_norm TEXT NOT NULL,
    import_id INTEGER NOT NULL,
    UNIQUE (collectivite_id, nir)
);
CREATE INDEX agent_identite ON agent (collectivite_id, nom_norm, prenom_norm, date_naissance);

CREATE TABLE evenement (
    id INTEGER PRIMARY KEY,
    agent_id INTEGER NOT NULL REFERENCES agent(id),
    identifiant TEXT NOT NULL,
    type TEXT NOT NULL,
    date TEXT NOT NULL,
    heure TEXT,
    date_declaration TEXT,
    statut TEXT,
    regime TEXT,
    grade TEXT,
    type_personnel TEXT,
    quotite_travail REAL,
    date_entree_metier TEXT,
    date_entree_poste TEXT,
    type_horaire_quotidien TEXT,
    horaire_deb1 TEXT,
    horaire_fin1 TEXT,
    horaire_deb2 TEXT,
    horaire_fin2 TEXT,
    enquete_hs INTEGER,
    sssm INTEGER,
    tache TEXT,
    accident_circulation INTEGER,
    accident_site INTEGER,
    circonstances TEXT,
    elements_materiels TEXT,
    no_tableau TEXT,
    assureur_collectivite TEXT,
    date_avis_medecin_conseil TEXT,
    import_id INTEGER NOT NULL
);
-- An agent's events and their children are read together (the agent's "dossier") and matched
-- by their §5.1 keys in memory: one integer index per parent link is all the lookups need.
CREATE INDEX evenement_agent ON evenement (agent_id);

CREATE TABLE deces (
    id INTEGER PRIMARY KEY,
    evenement_id INTEGER NOT NULL UNIQUE REFERENCES evenement(id),
    date TEXT NOT NULL,
    heure TEXT,
    cause TEXT,
    import_id INTEGER NOT NULL
);

CREATE TABLE arret (
    id INTEGER PRIMARY KEY,
    evenement_id INTEGER NOT NULL REFERENCES evenement(id),
    date_debut TEXT NOT NULL,
    date_fin TEXT,
    import_id INTEGER NOT NULL
);
CREATE INDEX arret_evenement ON arret (evenement_id);

CREATE TABLE certificat (
    id INTEGER PRIMARY KEY,
    evenement_id INTEGER NOT NULL REFERENCES evenement(id),
    identifiant TEXT NOT NULL,
    date TEXT NOT NULL,
    type TEXT NOT NULL,
    date_reprise TEXT,
    import_id INTEGER NOT NULL
);
CREATE INDEX certificat_evenement ON certificat (evenement_id);

CREATE TABLE lesion (
    id INTEGER PRIMARY KEY,
    evenement_id INTEGER NOT NULL REFERENCES evenement(id),
    siege TEXT NOT NULL,
    nature TEXT NOT NULL,
    lateralite TEXT,
    import_id INTEGER NOT NULL
);
CREATE INDEX lesion_evenement ON lesion (evenement_id);

CREATE TABLE consequence (
    id INTEGER PRIMARY KEY,
    evenement_id INTEGER NOT NULL REFERENCES evenement(id),
    identifiant TEXT NOT NULL,
    type TEXT NOT NULL,
    date_decision TEXT NOT NULL,
    taux_deficit REAL,
    import_id INTEGER NOT NULL
);
CREATE INDEX consequence_evenement ON consequence (evenement_id);
