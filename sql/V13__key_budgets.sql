-- signetd schema 13: signature budgets and validity windows of ring keys. A key may sign at
-- most `max_signatures` times (its own, else its ring's `key_max_signatures`) and only between
-- `usable_from` and `usable_until`; `signatures_spent` counts the signatures made while a
-- budget applied, taken in the same statement that checks the budget, so that no number of
-- daemons can overrun it.

ALTER TABLE keys
    ADD COLUMN max_signatures   bigint CHECK (max_signatures >= 0),
    ADD COLUMN signatures_spent bigint NOT NULL DEFAULT 0 CHECK (signatures_spent >= 0),
    ADD COLUMN usable_from      timestamptz,
    ADD COLUMN usable_until     timestamptz,
    ADD CONSTRAINT keys_usable_window CHECK (usable_until IS NULL OR usable_from IS NULL
                                             OR usable_from < usable_until);
ALTER TABLE rings ADD COLUMN key_max_signatures bigint CHECK (key_max_signatures >= 0);

-- Whether key `k` (of a ring whose per-key budget is `p_ring_max`) may sign now: budget left
-- and inside its window.
CREATE FUNCTION keys_may_sign(k keys, p_ring_max bigint) RETURNS boolean
LANGUAGE sql AS $$
    SELECT (coalesce(k.max_signatures, p_ring_max) IS NULL
            OR k.signatures_spent < coalesce(k.max_signatures, p_ring_max))
       AND (k.usable_from IS NULL OR k.usable_from <= clock_timestamp())
       AND (k.usable_until IS NULL OR clock_timestamp() < k.usable_until)
$$;

-- Leases the least recently used idle key of `p_ring` as `rings_lease_lru_key` did (schema
-- 8), among the keys that may sign now; with `p_unlimited_only`, only among keys without a
-- budget or window (batch jobs do not count budgets yet).
CREATE FUNCTION rings_lease_key(
    p_ring text, p_holder text, p_ttl_secs double precision, p_exclude uuid[],
    p_unlimited_only boolean
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_key uuid;
BEGIN
    WITH candidate AS (
        SELECT k.id FROM keys k JOIN rings r ON r.name = k.ring
          LEFT JOIN key_leases l ON l.key_id = k.id
         WHERE k.ring = p_ring AND k.state = 'active' AND k.retired_at IS NULL
           AND keys_may_sign(k, r.key_max_signatures)
           AND NOT (p_unlimited_only AND (coalesce(k.max_signatures, r.key_max_signatures) IS NOT NULL
                                          OR k.usable_from IS NOT NULL
                                          OR k.usable_until IS NOT NULL))
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

-- Online signing leases only keys that may sign now.
CREATE OR REPLACE FUNCTION rings_lease_lru_key(
    p_ring text, p_holder text, p_ttl_secs double precision, p_exclude uuid[]
) RETURNS uuid LANGUAGE sql AS $$
    SELECT rings_lease_key(p_ring, p_holder, p_ttl_secs, p_exclude, false)
$$;

-- Batch jobs lease only keys without a budget or window.
CREATE FUNCTION rings_lease_unlimited_key(
    p_ring text, p_holder text, p_ttl_secs double precision, p_exclude uuid[]
) RETURNS uuid LANGUAGE sql AS $$
    SELECT rings_lease_key(p_ring, p_holder, p_ttl_secs, p_exclude, true)
$$;

CREATE OR REPLACE FUNCTION jobs_claim_batch(p_holder text, p_ttl_secs double precision, p_page integer)
RETURNS TABLE (
    o_job uuid, o_ring text, o_batch bigint, o_seq integer, o_first bigint, o_last bigint,
    o_attempt integer, o_key uuid, o_ids bigint[], o_data bytea[]
) LANGUAGE plpgsql AS $$
BEGIN
    SELECT j.id, j.ring INTO o_job, o_ring FROM jobs j WHERE j.state = 'running';
    IF NOT FOUND THEN
        RETURN;
    END IF;
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
    o_key := rings_lease_unlimited_key(o_ring, p_holder, p_ttl_secs, '{}');
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
