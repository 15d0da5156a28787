-- signetd schema 10: a retired key finishes no batch. A batch leased before its key was retired
-- used to be stored when it finished (signed with a key that no longer signs); now the finish
-- refuses it with SJ005, the worker gives the batch up, and it is signed again with an active
-- key. The worker's renewal also treats a retired key as a lost lease, so it stops signing
-- within a third of the lease time rather than at the end of the batch.
-- jobs_finish_batch is V9's with the retirement check after the key's release; errors: SJ001
-- claim lost, SJ002 job not running, SJ003 lease lost, SJ004 bad arguments, SJ005 key
-- retired, 23505 a record is signed already.
CREATE OR REPLACE FUNCTION jobs_finish_batch(
    p_batch bigint, p_holder text, p_attempt integer, p_key uuid,
    p_records bigint[], p_signatures bytea[], p_root bytea
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_job    uuid;
    v_first  bigint;
    v_last   bigint;
    v_state  text;
    v_count  integer := coalesce(cardinality(p_records), 0);
    v_now    timestamptz := clock_timestamp();
BEGIN
    IF v_count <> coalesce(cardinality(p_signatures), 0)
       OR length(p_root) IS DISTINCT FROM 32 THEN
        RAISE EXCEPTION 'bad arguments for batch %', p_batch USING ERRCODE = 'SJ004';
    END IF;
    -- The batch and the lease in one statement: the join finds the lease only if the caller
    -- still holds it (so the key exists, and a key nobody leased cannot fail the foreign key
    -- outside this function's control).
    UPDATE batches b SET state = 'done', key_id = l.key_id, signed = v_count, root = p_root,
           finished_at = v_now, claim_expires_at = NULL
      FROM key_leases l
     WHERE b.id = p_batch AND b.state = 'claimed' AND b.holder = p_holder
       AND b.attempts = p_attempt
       AND l.key_id = p_key AND l.holder = p_holder AND l.expires_at >= v_now
    RETURNING b.job_id, b.first_record, b.last_record INTO v_job, v_first, v_last;
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM batches WHERE id = p_batch AND state = 'claimed'
                      AND holder = p_holder AND attempts = p_attempt) THEN
            RAISE EXCEPTION 'the lease of key % was lost', p_key USING ERRCODE = 'SJ003';
        END IF;
        RAISE EXCEPTION 'batch % is no longer claimed by this worker', p_batch
            USING ERRCODE = 'SJ001';
    END IF;
    SELECT state INTO v_state FROM jobs WHERE id = v_job FOR SHARE;
    IF v_state IS DISTINCT FROM 'running' THEN
        RAISE EXCEPTION 'job % is %', v_job, v_state USING ERRCODE = 'SJ002';
    END IF;
    IF NOT jobs_release_key(p_key, p_holder, v_count::bigint) THEN
        RAISE EXCEPTION 'the lease of key % was lost', p_key USING ERRCODE = 'SJ003';
    END IF;
    -- Read after jobs_release_key has updated (and so locked) the key's row: a retirement
    -- committed before that update is seen here; a later one waits for this transaction.
    IF NOT EXISTS (SELECT 1 FROM keys WHERE id = p_key AND state = 'active'
                      AND retired_at IS NULL) THEN
        RAISE EXCEPTION 'key % was retired', p_key USING ERRCODE = 'SJ005';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_records) AS r(id) WHERE r.id < v_first OR r.id > v_last)
    THEN
        RAISE EXCEPTION 'records outside batch %', p_batch USING ERRCODE = 'SJ004';
    END IF;
    INSERT INTO signatures (record_id, batch_id, leaf_index, signature)
        SELECT u.r, p_batch, (u.n - 1)::integer, u.s
          FROM unnest(p_records, p_signatures) WITH ORDINALITY AS u(r, s, n);
    UPDATE batch_leases SET released_at = v_now, outcome = 'done'
     WHERE batch_id = p_batch AND attempt = p_attempt;
    UPDATE jobs SET state = 'done', finished_at = v_now
     WHERE id = v_job AND state = 'running'
       AND NOT EXISTS (SELECT 1 FROM batches WHERE job_id = v_job AND state <> 'done');
    IF FOUND THEN
        PERFORM pg_notify('signetd_jobs', 'done');
        RETURN true;
    END IF;
    RETURN false;
END
$$;

-- jobs_finish_batch in its own subtransaction, as in V7, with SJ005 among the refusals.
CREATE OR REPLACE FUNCTION jobs_try_finish_batch(
    p_batch bigint, p_holder text, p_attempt integer, p_key uuid,
    p_records bigint[], p_signatures bytea[], p_root bytea
) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    IF jobs_finish_batch(p_batch, p_holder, p_attempt, p_key, p_records, p_signatures, p_root)
    THEN
        RETURN 'done';
    END IF;
    RETURN 'open';
EXCEPTION
    WHEN SQLSTATE 'SJ001' OR SQLSTATE 'SJ002' OR SQLSTATE 'SJ003' OR SQLSTATE 'SJ004'
         OR SQLSTATE 'SJ005' OR unique_violation THEN
        RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
