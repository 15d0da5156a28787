-- signetd schema 7: fewer round trips for the audit writer. Every round trip of its serial
-- transaction delays every append behind it, and on a busy machine each one also waits for a
-- CPU; these functions do server-side what took several client statements.

-- Takes the writer's transaction-scoped advisory lock, then returns the log's size (the next
-- sequence number). Two statements, in this order: under READ COMMITTED each statement of a
-- volatile function takes a new snapshot, so the size read after the lock sees every entry
-- the previous holder committed.
CREATE FUNCTION audit_lock_writer(p_lock bigint) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(p_lock);
    RETURN (SELECT coalesce(max(seq) + 1, 0) FROM audit_entries);
END
$$;

-- jobs_finish_batch inside its own subtransaction (the exception block): an expected refusal
-- (claim lost, job not running, lease lost, bad arguments, a record signed already) undoes only
-- this batch's changes and comes back as a value, so the writer needs no client-side
-- SAVEPOINT and RELEASE around it. Returns 'done' (the job is done), 'open', or the SQLSTATE,
-- a space and the message of the refusal. Other errors propagate.
CREATE FUNCTION jobs_try_finish_batch(
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
         OR unique_violation THEN
        RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;
