-- signetd schema 10: a retired key finishes no batch. A batch leased before its key was retired
-- used to be stored when it finished (signed with a key that no longer signs); now the finish
-- refuses it with SJ005, the worker gives the batch up, and it is signed again with an active
-- key. The worker's renewal also treats a retired key as a lost lease, so it stops signing
-- within a third of the lease time rather than at the end of the batch.
--
-- jobs_try_finish_batch as in V7, with the retirement check after jobs_finish_batch and SJ005
-- among the refusals. The key's row is read after jobs_finish_batch has updated (and so
-- locked) it through jobs_release_key: a retirement committed before that update is seen
-- here, a later one waits for this transaction. A refusal undoes the whole subtransaction,
-- the batch, its signatures and a job-done notification included.
CREATE OR REPLACE FUNCTION jobs_try_finish_batch(
    p_batch bigint, p_holder text, p_attempt integer, p_key uuid,
    p_records bigint[], p_signatures bytea[], p_root bytea
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_done boolean;
BEGIN
    v_done := jobs_finish_batch(p_batch, p_holder, p_attempt, p_key, p_records, p_signatures,
                                p_root);
    IF NOT EXISTS (SELECT 1 FROM keys WHERE id = p_key AND state = 'active'
                      AND retired_at IS NULL) THEN
        RAISE EXCEPTION 'key % was retired', p_key USING ERRCODE = 'SJ005';
    END IF;
    IF v_done THEN
        RETURN 'done';
    END IF;
    RETURN 'open';
EXCEPTION
    WHEN SQLSTATE 'SJ001' OR SQLSTATE 'SJ002' OR SQLSTATE 'SJ003' OR SQLSTATE 'SJ004'
         OR SQLSTATE 'SJ005' OR unique_violation THEN
        RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
