-- Files kept as large objects (received files, logs): the size of one, or NULL when it does
-- not exist, so that a listing of a sender's retours/ reads every size in one statement.
CREATE FUNCTION atmp_lo_size(o oid) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    fd integer;
    s bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_largeobject_metadata WHERE oid = o) THEN
        RETURN NULL;
    END IF;
    fd := lo_open(o, 262144);
    s := lo_lseek64(fd, 0, 2);
    PERFORM lo_close(fd);
    RETURN s;
END
$$;
