-- keys_spend as in schema 14, without a new row version for a key that has no budget. The key
-- row is checked and locked (`FOR UPDATE`, re-checked on its newest version if another
-- transaction changed it, as the guarded UPDATE was); only a key with a budget is written. A
-- batch job's lease used to rewrite its key's row to add 0: one dead `keys` tuple per batch,
-- which every lease's scan of the ring's keys then stepped over until vacuum.
CREATE OR REPLACE FUNCTION keys_spend(p_key uuid, p_n bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_max   bigint;
    v_spent bigint;
BEGIN
    SELECT coalesce(k.max_signatures, r.key_max_signatures) INTO v_max
      FROM keys k JOIN rings r ON r.name = k.ring
     WHERE k.id = p_key AND keys_may_sign(k, r.key_max_signatures, p_n)
       FOR UPDATE OF k;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_max IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE keys SET signatures_spent = signatures_spent + p_n WHERE id = p_key
    RETURNING signatures_spent INTO v_spent;
    IF p_n > 0 AND v_spent >= v_max THEN
        PERFORM pg_notify('signetd', 'key.spent ' || p_key::text);
    END IF;
    RETURN p_n;
END
$$;
