-- signetd schema 9: jobs_finish_batch in fewer statements. It runs in the audit writer's serial
-- transaction once per batch; at small batch sizes its statements are a good part of
-- PostgreSQL's work. The batch row and the key lease are checked, and the batch marked done,
-- by one UPDATE (the batch used to be locked by a SELECT first, the lease by another); the
-- lease is released by jobs_release_key as before. Same checks, same errors, same lock order
-- (batch row, job row, lease row); the whole function still runs inside
-- jobs_try_finish_batch's exception block, so a refusal undoes everything it did.
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
