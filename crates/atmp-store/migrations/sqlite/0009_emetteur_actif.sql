-- A sender can be disabled (issue 11): it can no longer log in over FTPS; its files and
-- imports stay. Its last FTPS login is shown to the platform's administrators.
ALTER TABLE emetteur ADD COLUMN actif INTEGER NOT NULL DEFAULT 1;
ALTER TABLE emetteur ADD COLUMN derniere_connexion TEXT;
