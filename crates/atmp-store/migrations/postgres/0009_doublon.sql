-- A duplicate names the import it repeats (issue 11): its page links it, its tracking-table
-- lines carry the original's sender and collectivités, so that those who see the original
-- see its duplicates too.
ALTER TABLE import ADD COLUMN doublon_de BIGINT REFERENCES import(id);
