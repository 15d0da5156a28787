-- signetd schema 15: the audit writer's common group, plain records only (no mutation), in one
-- round trip. The writer computes the entries and the tree's new nodes from the tree it last
-- committed, then sends BEGIN, one call of this function and COMMIT back to back. The function
-- takes the writer's lock, and appends only if the log is still the size the writer assumed
-- and every caller of the group may still be served (invariant 7: checked under the lock, in
-- the transaction that commits the entries). Otherwise it appends nothing and says why; the
-- writer then takes its general path (`audit_lock_writer`, the standing of each caller with its
-- reason, the frontier loaded again), which decides. The test here only has to be no weaker
-- than `store::standing_refusal`: a caller it does not pass goes to that path.
--
-- Returns 'ok' (appended), 'size <n>' (the log has n entries: another process appended) or
-- 'standing' (a caller's certificate is not active, has expired, or its account was deleted).
CREATE FUNCTION audit_append_plain(
    p_lock bigint, p_size bigint, p_callers text[], p_now timestamptz,
    p_seq bigint[], p_time timestamptz[], p_fingerprint text[], p_account text[],
    p_action text[], p_subject text[], p_params bytea[], p_output bytea[], p_result text[],
    p_level smallint[], p_idx bigint[], p_hash bytea[]
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_size bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    -- A new statement, so a new snapshot (READ COMMITTED): it sees what the lock's previous
    -- holder committed.
    v_size := (SELECT coalesce(max(seq) + 1, 0) FROM audit_entries);
    IF v_size <> p_size THEN
        RETURN 'size ' || v_size;
    END IF;
    IF EXISTS (
        SELECT 1 FROM unnest(p_callers) AS f(fp)
        LEFT JOIN certificates c ON c.fingerprint = f.fp
        LEFT JOIN accounts a ON a.id = c.account_id
        WHERE c.status IS DISTINCT FROM 'active'
           OR a.deleted_at IS NOT NULL
           OR c.not_after < p_now
    ) THEN
        RETURN 'standing';
    END IF;
    INSERT INTO audit_entries (seq, time, actor_fingerprint, actor_account, action, subject,
                               params_digest, output_digest, result)
    SELECT * FROM unnest(p_seq, p_time, p_fingerprint, p_account, p_action, p_subject,
                         p_params, p_output, p_result);
    INSERT INTO audit_nodes (level, idx, hash)
    SELECT * FROM unnest(p_level, p_idx, p_hash);
    RETURN 'ok';
END
$$;
