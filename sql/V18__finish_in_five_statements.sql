-- signetd schema 18: a batch finishes in five statements, in one function. It runs once per
-- batch in the audit writer's transaction, and at small batch sizes PostgreSQL's CPU per
-- batch bounds a job; most of it is per statement. `jobs_try_finish_batch` called three more
-- functions and ran eleven statements (the batch, the job, the lease, the key, the range of
-- the records, the signatures, the lease history, the job's end, the key's retirement, the
-- reservation twice). Now each statement does several of those checks at once:
--   1. the job row share-locked while it runs (a cancel waits for this transaction, or this
--      one sees the cancel), the batch checked (claimed by this holder and attempt) and marked
--      done, the key lease checked (this holder's, not expired): one UPDATE;
--   2. the lease released and the key's last use written, only while the key is active and not
--      retired (the UPDATE locks the key's row and re-checks it on the newest version, so a
--      retirement committed before it is seen and a later one waits for this transaction);
--   3. the signatures stored, only those inside the batch's range (a count short of the
--      records refuses the batch);
--   4. the lease history closed and its reservation zeroed, what was reserved read in the
--      same statement; a reservation that differs from the records signed is settled as
--      `jobs_settle_reservation` did (the excess given back, a shortfall spent under the budget's
--      guard or refused);
--   5. the job marked done after its last batch.
-- Same refusals (SJ001 claim lost, SJ002 job not running, SJ003 lease lost, SJ004 bad
-- arguments or records outside the batch, SJ005 key retired, SJ006 budget cannot take the
-- batch, 23505 a record signed already), told apart only when the batch is refused. A refusal
-- undoes everything the function did (its exception block is a subtransaction). A NULL record
-- id is now refused as outside the batch (SJ004) instead of failing the writer's transaction.
CREATE OR REPLACE FUNCTION jobs_try_finish_batch(
    p_batch bigint, p_holder text, p_attempt integer, p_key uuid,
    p_records bigint[], p_signatures bytea[], p_root bytea
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_count    integer := coalesce(cardinality(p_records), 0);
    v_now      timestamptz := clock_timestamp();
    v_job      uuid;
    v_first    bigint;
    v_last     bigint;
    v_stored   integer;
    v_reserved bigint;
BEGIN
    IF v_count <> coalesce(cardinality(p_signatures), 0)
       OR length(p_root) IS DISTINCT FROM 32 THEN
        RAISE EXCEPTION 'bad arguments for batch %', p_batch USING ERRCODE = 'SJ004';
    END IF;
    WITH job AS (
        SELECT j.id FROM jobs j
         WHERE j.id = (SELECT n.job_id FROM batches n WHERE n.id = p_batch)
           AND j.state = 'running'
           FOR SHARE)
    UPDATE batches b SET state = 'done', key_id = l.key_id, signed = v_count, root = p_root,
           finished_at = v_now, claim_expires_at = NULL
      FROM job, key_leases l
     WHERE b.id = p_batch AND b.job_id = job.id AND b.state = 'claimed'
       AND b.holder = p_holder AND b.attempts = p_attempt
       AND l.key_id = p_key AND l.holder = p_holder AND l.expires_at >= v_now
    RETURNING b.job_id, b.first_record, b.last_record INTO v_job, v_first, v_last;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM batches WHERE id = p_batch AND state = 'claimed'
                          AND holder = p_holder AND attempts = p_attempt) THEN
            RAISE EXCEPTION 'batch % is no longer claimed by this worker', p_batch
                USING ERRCODE = 'SJ001';
        END IF;
        IF NOT EXISTS (SELECT 1 FROM key_leases WHERE key_id = p_key AND holder = p_holder
                          AND expires_at >= v_now) THEN
            RAISE EXCEPTION 'the lease of key % was lost', p_key USING ERRCODE = 'SJ003';
        END IF;
        RAISE EXCEPTION 'job of batch % is not running', p_batch USING ERRCODE = 'SJ002';
    END IF;
    WITH released AS (
        DELETE FROM key_leases WHERE key_id = p_key AND holder = p_holder
        RETURNING acquired_at)
    UPDATE keys k SET last_used_at = greatest(k.last_used_at, released.acquired_at),
           usage_count = k.usage_count + v_count
      FROM released
     WHERE k.id = p_key AND k.state = 'active' AND k.retired_at IS NULL;
    IF NOT FOUND THEN
        IF NOT EXISTS (SELECT 1 FROM keys WHERE id = p_key AND state = 'active'
                          AND retired_at IS NULL) THEN
            RAISE EXCEPTION 'key % was retired', p_key USING ERRCODE = 'SJ005';
        END IF;
        RAISE EXCEPTION 'the lease of key % was lost', p_key USING ERRCODE = 'SJ003';
    END IF;
    PERFORM pg_notify('signetd_jobs', 'key');
    INSERT INTO signatures (record_id, batch_id, leaf_index, signature)
        SELECT u.r, p_batch, (u.n - 1)::integer, u.s
          FROM unnest(p_records, p_signatures) WITH ORDINALITY AS u(r, s, n)
         WHERE u.r BETWEEN v_first AND v_last;
    GET DIAGNOSTICS v_stored = ROW_COUNT;
    IF v_stored <> v_count THEN
        RAISE EXCEPTION 'records outside batch %', p_batch USING ERRCODE = 'SJ004';
    END IF;
    WITH lease AS (
        SELECT batch_id, attempt, reserved FROM batch_leases
         WHERE batch_id = p_batch AND attempt = p_attempt FOR UPDATE)
    UPDATE batch_leases h SET released_at = v_now, outcome = 'done', reserved = 0
      FROM lease
     WHERE h.batch_id = lease.batch_id AND h.attempt = lease.attempt
    RETURNING lease.reserved INTO v_reserved;
    IF v_reserved > v_count THEN
        UPDATE keys SET signatures_spent = greatest(signatures_spent - (v_reserved - v_count), 0)
         WHERE id = p_key;
    ELSIF v_reserved > 0 AND v_reserved < v_count
          AND keys_spend(p_key, (v_count - v_reserved)::bigint) IS NULL THEN
        RAISE EXCEPTION 'the signature budget of key % cannot take batch %', p_key, p_batch
            USING ERRCODE = 'SJ006';
    END IF;
    UPDATE jobs SET state = 'done', finished_at = v_now
     WHERE id = v_job AND state = 'running'
       AND NOT EXISTS (SELECT 1 FROM batches WHERE job_id = v_job AND state <> 'done');
    IF FOUND THEN
        PERFORM pg_notify('signetd_jobs', 'done');
        RETURN 'done';
    END IF;
    RETURN 'open';
EXCEPTION
    WHEN SQLSTATE 'SJ001' OR SQLSTATE 'SJ002' OR SQLSTATE 'SJ003' OR SQLSTATE 'SJ004'
         OR SQLSTATE 'SJ005' OR SQLSTATE 'SJ006' OR unique_violation THEN
        RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
