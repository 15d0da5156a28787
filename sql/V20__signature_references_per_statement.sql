-- signetd schema 20: the signatures' references checked once per statement, not once per row.
-- The foreign keys from `signatures` to `records` and `batches` ran two triggers per signature,
-- each a query that share-locked the referenced row (a write to that row's page and to the WAL):
-- at batch size 100 they were half of `jobs_try_finish_batch` (1.34 ms a batch with them, 0.62
-- without). What they guaranteed still holds, by two cheaper means:
--   * every signature refers to a record and a batch that exist: one trigger per INSERT
--     statement checks all its new rows at once (their ids looked up in both tables);
--   * those rows stay: records may not be updated, deleted or truncated (they are what was
--     signed; the daemon's role could only insert them already), nor batches deleted,
--     truncated or given another id. What the foreign keys allowed and this refuses: deleting
--     a record that has no signature. The owner who must can disable the trigger deliberately.
-- `jobs_try_finish_batch` is the function of V18 with the reference check's refusal
-- (23503, foreign_key_violation) caught like its others: a record id inside the batch's range
-- that names no record refuses that batch alone, not the audit writer's whole group.

ALTER TABLE signatures DROP CONSTRAINT signatures_record_id_fkey,
                       DROP CONSTRAINT signatures_batch_id_fkey;

-- The ids are gathered into arrays and looked up through each primary key (`id = ANY`, one
-- index scan): a join with the transition table, which has no statistics, was planned as a
-- scan of all the records. A statement's record ids are distinct (the primary key of
-- `signatures` refuses a repeated one before this runs), so the count of records found is
-- the count of signatures exactly when each refers to one.
CREATE FUNCTION signatures_check_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v_records bigint[];
    v_batches bigint[];
BEGIN
    SELECT array_agg(record_id), array_agg(DISTINCT batch_id) INTO v_records, v_batches
      FROM new_signatures;
    IF (SELECT count(*) FROM records WHERE id = ANY (v_records))
       <> coalesce(cardinality(v_records), 0) THEN
        RAISE EXCEPTION 'a signature refers to a record that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    IF (SELECT count(*) FROM batches WHERE id = ANY (v_batches))
       <> coalesce(cardinality(v_batches), 0) THEN
        RAISE EXCEPTION 'a signature refers to a batch that does not exist'
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER signatures_references AFTER INSERT ON signatures
    REFERENCING NEW TABLE AS new_signatures
    FOR EACH STATEMENT EXECUTE FUNCTION signatures_check_references();

CREATE FUNCTION jobs_rows_kept() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: signatures refer to its rows, which are kept', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'foreign_key_violation';
END
$$;

CREATE TRIGGER records_kept BEFORE UPDATE OR DELETE ON records
    FOR EACH ROW EXECUTE FUNCTION jobs_rows_kept();
CREATE TRIGGER records_not_truncated BEFORE TRUNCATE ON records
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_rows_kept();
CREATE TRIGGER batches_kept BEFORE DELETE OR UPDATE OF id ON batches
    FOR EACH ROW EXECUTE FUNCTION jobs_rows_kept();
CREATE TRIGGER batches_not_truncated BEFORE TRUNCATE ON batches
    FOR EACH STATEMENT EXECUTE FUNCTION jobs_rows_kept();

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
         OR SQLSTATE 'SJ005' OR SQLSTATE 'SJ006' OR unique_violation
         OR foreign_key_violation THEN
        RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
