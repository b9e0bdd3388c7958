-- The integrated tables' ids are taken by the file transaction in blocks (postgres/file_tx.rs):
-- one nextval reserves 1000 ids, so that rows can be sent by COPY with their ids, parents and
-- children known beforehand. Ids keep their meaning; only their numbering has gaps.
ALTER TABLE service ALTER COLUMN id SET INCREMENT BY 1000;
ALTER TABLE agent ALTER COLUMN id SET INCREMENT BY 1000;
ALTER TABLE evenement ALTER COLUMN id SET INCREMENT BY 1000;
ALTER TABLE arret ALTER COLUMN id SET INCREMENT BY 1000;
ALTER TABLE certificat ALTER COLUMN id SET INCREMENT BY 1000;
ALTER TABLE lesion ALTER COLUMN id SET INCREMENT BY 1000;
ALTER TABLE consequence ALTER COLUMN id SET INCREMENT BY 1000;
ALTER TABLE deces ALTER COLUMN id SET INCREMENT BY 1000;
