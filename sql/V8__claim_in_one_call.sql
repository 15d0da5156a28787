-- signetd schema 8: a worker takes its batch, its key and the batch's records in one call.
-- Claim, lease, lease history and the first read were four round trips and three commits
-- per batch; at small batch sizes they, not the token, bounded a job. The claim also looked
-- the batch up through a join on the running job, which the planner could not order by the
-- (job_id, seq) index: every claim read and sorted every open batch of the job.

-- Leases the least recently used idle key of `p_ring` (active, not retired, not in
-- `p_exclude`) to `p_holder` for `p_ttl_secs`: a new lease row, or one whose lease expired
-- (its holder died). Concurrent callers in any process never get the same key
-- (`FOR UPDATE SKIP LOCKED`, and the conflict clause only takes an expired lease). Returns the
-- key, or NULL when every key is leased.
CREATE FUNCTION rings_lease_lru_key(
    p_ring text, p_holder text, p_ttl_secs double precision, p_exclude uuid[]
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_key uuid;
BEGIN
    -- PL/pgSQL, not SQL: its statements' plans are cached for the session.
    WITH candidate AS (
        SELECT k.id FROM keys k LEFT JOIN key_leases l ON l.key_id = k.id
         WHERE k.ring = p_ring AND k.state = 'active' AND k.retired_at IS NULL
           AND (l.key_id IS NULL OR l.expires_at < clock_timestamp())
           AND NOT (k.id = ANY (p_exclude))
         ORDER BY k.last_used_at NULLS FIRST, k.created_at, k.id
         LIMIT 1 FOR UPDATE OF k SKIP LOCKED),
    leased AS (
        INSERT INTO key_leases (key_id, holder, acquired_at, expires_at)
        SELECT id, p_holder, clock_timestamp(),
               clock_timestamp() + make_interval(secs => p_ttl_secs)
          FROM candidate
        ON CONFLICT (key_id) DO UPDATE SET holder = excluded.holder,
            acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
         WHERE key_leases.expires_at < clock_timestamp()
        RETURNING key_id)
    SELECT key_id INTO v_key FROM leased;
    RETURN v_key;
END
$$;

-- The unsigned records (ids and data, by id) of a batch's range with an id above `p_after` and
-- at most `p_last`, at most `p_limit` of them: a worker reads its batch in pages. The bounds
-- are repeated on `signatures` so that the cached generic plan, which cannot see how narrow
-- the range is, never walks the signatures below it (a merge anti join would otherwise read
-- every signature from the first).
CREATE FUNCTION jobs_unsigned_records(
    p_after bigint, p_last bigint, p_limit integer, OUT r_ids bigint[], OUT r_data bytea[]
) LANGUAGE plpgsql AS $$
BEGIN
    SELECT coalesce(array_agg(p.id ORDER BY p.id), '{}'),
           coalesce(array_agg(p.data ORDER BY p.id), '{}')
      INTO r_ids, r_data
      FROM (SELECT r.id, r.data FROM records r
             WHERE r.id > p_after AND r.id <= p_last
               AND NOT EXISTS (SELECT 1 FROM signatures s
                                WHERE s.record_id = r.id
                                  AND s.record_id > p_after AND s.record_id <= p_last)
             ORDER BY r.id LIMIT p_limit) p;
END
$$;

-- Claims the next open batch of the running job for `p_holder` until `p_ttl_secs` from now
-- (a pending batch, or one whose claim expired), leases the least recently used idle key of
-- the job's ring and writes the lease into the batch's lease history, and reads the first
-- `p_page` unsigned records of the batch — one transaction, one commit.
--   no row: no job runs;
--   o_batch NULL: a job runs, but every open batch is claimed by a live worker;
--   o_key NULL: the batch is claimed, but every key is leased (the caller waits for one).
CREATE FUNCTION jobs_claim_batch(p_holder text, p_ttl_secs double precision, p_page integer)
RETURNS TABLE (
    o_job uuid, o_ring text, o_batch bigint, o_seq integer, o_first bigint, o_last bigint,
    o_attempt integer, o_key uuid, o_ids bigint[], o_data bytea[]
) LANGUAGE plpgsql AS $$
BEGIN
    SELECT j.id, j.ring INTO o_job, o_ring FROM jobs j WHERE j.state = 'running';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- In (job_id, seq) order on the partial index of open batches: stops at the first one.
    UPDATE batches b SET state = 'claimed', holder = p_holder, attempts = b.attempts + 1,
           claim_expires_at = clock_timestamp() + make_interval(secs => p_ttl_secs)
     WHERE b.id = (SELECT n.id FROM batches n
                    WHERE n.job_id = o_job AND n.state <> 'done'
                      AND (n.state = 'pending' OR n.claim_expires_at < clock_timestamp())
                    ORDER BY n.seq LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING b.id, b.seq, b.first_record, b.last_record, b.attempts
         INTO o_batch, o_seq, o_first, o_last, o_attempt;
    IF NOT FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    o_key := rings_lease_lru_key(o_ring, p_holder, p_ttl_secs, '{}');
    IF o_key IS NOT NULL THEN
        INSERT INTO batch_leases (batch_id, attempt, key_id, holder, leased_at, expires_at)
        SELECT o_batch, o_attempt, l.key_id, l.holder, l.acquired_at, l.expires_at
          FROM key_leases l WHERE l.key_id = o_key;
    END IF;
    SELECT r.r_ids, r.r_data INTO o_ids, o_data
      FROM jobs_unsigned_records(o_first - 1, o_last, p_page) r;
    RETURN NEXT;
END
$$;
