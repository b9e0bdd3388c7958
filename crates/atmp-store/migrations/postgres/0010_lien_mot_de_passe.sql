-- "Mot de passe oublié" (issue 11): one-use links, kept as the SHA-256 of their token, valid
-- 30 minutes; using one deletes it.
CREATE TABLE lien_mot_de_passe (
    token_sha256 TEXT PRIMARY KEY,
    utilisateur_id BIGINT NOT NULL REFERENCES utilisateur(id) ON DELETE CASCADE,
    expires_at TEXT NOT NULL
);
CREATE INDEX lien_mot_de_passe_utilisateur ON lien_mot_de_passe (utilisateur_id);
