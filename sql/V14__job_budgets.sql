-- signetd schema 14: batch jobs count signature budgets too. A batch is committed whole with one
-- key, so a worker reserves the batch's whole size from the key's budget when it leases the key
-- (in the lease's transaction, the key row locked: concurrent online spends wait and re-check
-- their guard, so no mix of daemons and jobs can overrun a budget), and settles when the
-- attempt ends: a finished batch gives back what it reserved and did not sign (normally
-- nothing), an abandoned one what its worker did not make. A worker that dies keeps its
-- reservation spent — nobody knows how many signatures it made — so a crash can leave a budget
-- under-used, never overrun; `batch_leases.reserved` keeps showing it. A key is only leased
-- for a batch it may sign whole; when no key of the ring may, the job waits for a budget to be
-- raised (the worker gives its claim back). A spend or reservation that uses a budget up
-- announces `key.spent <id>` on channel `signetd`, so every daemon stops lending the key at
-- once. Daemons older than this schema must not run against it (their workers call
-- `rings_lease_unlimited_key`, dropped here).

-- Signatures reserved from the key's budget for this attempt and not settled yet: zeroed when
-- the attempt finishes or is given up; left standing when its worker died.
ALTER TABLE batch_leases ADD COLUMN reserved bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0);

-- The lease and budget functions of schema 13 are replaced by ones that know how many
-- signatures the lease is for.
DROP FUNCTION rings_lease_unlimited_key(text, text, double precision, uuid[]);
DROP FUNCTION rings_lease_key(text, text, double precision, uuid[], boolean);
DROP FUNCTION keys_may_sign(keys, bigint);

-- Whether key `k` (of a ring whose per-key budget is `p_ring_max`) may make `p_need` more
-- signatures now: that much budget left, and inside its window.
CREATE FUNCTION keys_may_sign(k keys, p_ring_max bigint, p_need bigint) RETURNS boolean
LANGUAGE sql AS $$
    SELECT (coalesce(k.max_signatures, p_ring_max) IS NULL
            OR k.signatures_spent + p_need <= coalesce(k.max_signatures, p_ring_max))
       AND (k.usable_from IS NULL OR k.usable_from <= clock_timestamp())
       AND (k.usable_until IS NULL OR clock_timestamp() < k.usable_until)
$$;

-- How many active keys of `p_ring` may make `p_need` more signatures now.
CREATE FUNCTION rings_signable_keys(p_ring text, p_need bigint) RETURNS bigint
LANGUAGE sql AS $$
    SELECT count(*) FROM keys k JOIN rings r ON r.name = k.ring
     WHERE k.ring = p_ring AND k.state = 'active' AND k.retired_at IS NULL
       AND keys_may_sign(k, r.key_max_signatures, p_need)
$$;

-- Counts `p_n` signatures of key `p_key` against its budget, if its budget and window allow
-- them, in the one statement that checks them: the UPDATE locks the row, and a concurrent
-- spender re-checks the guard on the row as this one left it, so no number of daemons and
-- workers can overrun the budget. Returns the signatures counted (0 for a key without a
-- budget), or NULL when refused (nothing counted). Announces `key.spent <id>` (the payload of
-- `Notice::KeySpent`) when this spend uses the budget up.
CREATE FUNCTION keys_spend(p_key uuid, p_n bigint) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_max   bigint;
    v_spent bigint;
BEGIN
    UPDATE keys k SET signatures_spent = k.signatures_spent
           + CASE WHEN coalesce(k.max_signatures, r.key_max_signatures) IS NULL THEN 0 ELSE p_n END
      FROM rings r
     WHERE k.id = p_key AND r.name = k.ring AND keys_may_sign(k, r.key_max_signatures, p_n)
    RETURNING coalesce(k.max_signatures, r.key_max_signatures), k.signatures_spent
         INTO v_max, v_spent;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_max IS NULL THEN
        RETURN 0;
    END IF;
    IF p_n > 0 AND v_spent >= v_max THEN
        PERFORM pg_notify('signetd', 'key.spent ' || p_key::text);
    END IF;
    RETURN p_n;
END
$$;

-- Leases the least recently used idle key of `p_ring` (active, not retired, not in
-- `p_exclude`, and allowed to make `p_need` more signatures now) to `p_holder` for
-- `p_ttl_secs`, as schema 13's `rings_lease_key` did. The key row stays locked until the
-- caller's transaction ends, so a reservation made in it cannot race an online spend. Returns
-- the key, or NULL when no such key is idle.
CREATE FUNCTION rings_lease_key(
    p_ring text, p_holder text, p_ttl_secs double precision, p_exclude uuid[], p_need bigint
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_key uuid;
BEGIN
    WITH candidate AS (
        SELECT k.id FROM keys k JOIN rings r ON r.name = k.ring
          LEFT JOIN key_leases l ON l.key_id = k.id
         WHERE k.ring = p_ring AND k.state = 'active' AND k.retired_at IS NULL
           AND keys_may_sign(k, r.key_max_signatures, p_need)
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

-- Online signing leases keys that may make one more signature; each request spends its own.
CREATE OR REPLACE FUNCTION rings_lease_lru_key(
    p_ring text, p_holder text, p_ttl_secs double precision, p_exclude uuid[]
) RETURNS uuid LANGUAGE sql AS $$
    SELECT rings_lease_key(p_ring, p_holder, p_ttl_secs, p_exclude, 1)
$$;

-- Leases a key for batch attempt (`p_batch`, `p_attempt`), which `p_holder` must hold: the
-- least recently used idle key of the job's ring that may sign the whole batch now, with the
-- batch's size reserved from its budget (none for a key without one) and the lease written
-- into the lease history with what was reserved — one transaction, so a reservation is never
-- made without its record. Returns the key, or NULL when the claim is not the caller's or no
-- idle key may sign the batch.
CREATE FUNCTION jobs_lease_key(
    p_batch bigint, p_attempt integer, p_holder text, p_ttl_secs double precision
) RETURNS uuid LANGUAGE plpgsql AS $$
DECLARE
    v_ring     text;
    v_size     bigint;
    v_key      uuid;
    v_reserved bigint;
BEGIN
    SELECT j.ring, b.size INTO v_ring, v_size FROM batches b JOIN jobs j ON j.id = b.job_id
     WHERE b.id = p_batch AND b.attempts = p_attempt AND b.holder = p_holder
       AND b.state = 'claimed';
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_key := rings_lease_key(v_ring, p_holder, p_ttl_secs, '{}', v_size);
    IF v_key IS NULL THEN
        RETURN NULL;
    END IF;
    v_reserved := keys_spend(v_key, v_size);
    IF v_reserved IS NULL THEN
        -- The window closed in the microseconds since the lease chose the key (its row is
        -- locked, so its budget cannot have moved): give the lease back.
        DELETE FROM key_leases WHERE key_id = v_key AND holder = p_holder;
        RETURN NULL;
    END IF;
    INSERT INTO batch_leases (batch_id, attempt, key_id, holder, leased_at, expires_at, reserved)
    SELECT p_batch, p_attempt, l.key_id, l.holder, l.acquired_at, l.expires_at, v_reserved
      FROM key_leases l WHERE l.key_id = v_key;
    RETURN v_key;
END
$$;

-- Settles the reservation of batch attempt (`p_batch`, `p_attempt`), of which `p_used`
-- signatures were made: gives back to the key's budget what was reserved and not used, exactly
-- once (the reservation is read under a row lock and zeroed). Returns what was reserved minus
-- `p_used` (negative when more were made than reserved), or NULL when nothing was reserved
-- (no lease, a key without a budget, or settled already).
CREATE FUNCTION jobs_settle_reservation(p_batch bigint, p_attempt integer, p_used bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_key      uuid;
    v_reserved bigint;
BEGIN
    SELECT key_id, reserved INTO v_key, v_reserved FROM batch_leases
     WHERE batch_id = p_batch AND attempt = p_attempt AND reserved > 0 FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    UPDATE batch_leases SET reserved = 0 WHERE batch_id = p_batch AND attempt = p_attempt;
    IF v_reserved > p_used THEN
        UPDATE keys SET signatures_spent = greatest(signatures_spent - (v_reserved - p_used), 0)
         WHERE id = v_key;
    END IF;
    RETURN v_reserved - p_used;
END
$$;

-- jobs_try_finish_batch as in schema 10, settling the reservation with the batch: what was
-- reserved and not signed goes back. A batch that signed more records than it reserved (only
-- possible if records appeared inside its range after the job was cut, which the audit
-- writer's lock rules out for the daemon's own ingestion) counts the excess with the same
-- guard as any spend, and is refused (SJ006) when the budget cannot take it.
CREATE OR REPLACE FUNCTION jobs_try_finish_batch(
    p_batch bigint, p_holder text, p_attempt integer, p_key uuid,
    p_records bigint[], p_signatures bytea[], p_root bytea
) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    v_done boolean;
    v_left bigint;
BEGIN
    v_done := jobs_finish_batch(p_batch, p_holder, p_attempt, p_key, p_records, p_signatures,
                                p_root);
    IF NOT EXISTS (SELECT 1 FROM keys WHERE id = p_key AND state = 'active'
                      AND retired_at IS NULL) THEN
        RAISE EXCEPTION 'key % was retired', p_key USING ERRCODE = 'SJ005';
    END IF;
    v_left := jobs_settle_reservation(p_batch, p_attempt,
                                      coalesce(cardinality(p_records), 0)::bigint);
    IF v_left < 0 AND keys_spend(p_key, -v_left) IS NULL THEN
        RAISE EXCEPTION 'the signature budget of key % cannot take batch %', p_key, p_batch
            USING ERRCODE = 'SJ006';
    END IF;
    IF v_done THEN
        RETURN 'done';
    END IF;
    RETURN 'open';
EXCEPTION
    WHEN SQLSTATE 'SJ001' OR SQLSTATE 'SJ002' OR SQLSTATE 'SJ003' OR SQLSTATE 'SJ004'
         OR SQLSTATE 'SJ005' OR SQLSTATE 'SJ006' OR unique_violation THEN
        RETURN SQLSTATE || ' ' || SQLERRM;
END
$$;

-- jobs_claim_batch as in schema 13, leasing through jobs_lease_key (a key that may sign the
-- whole batch, with its size reserved) and returning the batch's size (o_size), which the
-- worker needs to tell "every key is leased" from "no key may sign this batch".
DROP FUNCTION jobs_claim_batch(text, double precision, integer);
CREATE FUNCTION jobs_claim_batch(p_holder text, p_ttl_secs double precision, p_page integer)
RETURNS TABLE (
    o_job uuid, o_ring text, o_batch bigint, o_seq integer, o_first bigint, o_last bigint,
    o_attempt integer, o_key uuid, o_ids bigint[], o_data bytea[], o_size integer
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
    RETURNING b.id, b.seq, b.first_record, b.last_record, b.attempts, b.size
         INTO o_batch, o_seq, o_first, o_last, o_attempt, o_size;
    IF NOT FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    o_key := jobs_lease_key(o_batch, o_attempt, p_holder, p_ttl_secs);
    SELECT r.r_ids, r.r_data INTO o_ids, o_data
      FROM jobs_unsigned_records(o_first - 1, o_last, p_page) r;
    RETURN NEXT;
END
$$;
