-- Files kept in the base (received files, logs) as large objects, gzip-compressed: one row
-- per large object with the size of the file as kept (uncompressed), so that a listing of a
-- sender's retours/ reads every size in one statement, and so that a large object no row
-- names (a process killed between the two) can be found.
CREATE TABLE fichier_conserve (
    oid OID PRIMARY KEY,
    taille BIGINT NOT NULL,
    conserve_le TEXT NOT NULL
);
