-- signetd schema 19: `jobs_claim_batches` (schema 17) keeps only as many claims as it leased
-- keys (at least one). A worker that claimed four batches with one idle key used to keep the
-- other three waiting for keys; each release then went to one of them, so the key just
-- released was taken again at once and the ring's keys were used unevenly (LRU among idle keys
-- held, but a key signed three batches while another signed one). The extra claims go back to
-- pending in the same transaction, for any worker to claim with the next idle key.
CREATE OR REPLACE FUNCTION jobs_claim_batches(
    p_holder text, p_ttl_secs double precision, p_page integer, p_count integer
) RETURNS TABLE (
    o_job uuid, o_ring text, o_batch bigint, o_seq integer, o_first bigint, o_last bigint,
    o_attempt integer, o_key uuid, o_ids bigint[], o_data bytea[], o_size integer
) LANGUAGE plpgsql AS $$
DECLARE
    v_job      uuid;
    v_ring     text;
    v_batches  bigint[];
    v_attempts integer[];
    v_sizes    integer[];
    v_need     bigint;
    v_keys     uuid[];
    v_budgeted boolean[];
    v_reserved bigint[];
    v_leased   integer;
BEGIN
    SELECT j.id, j.ring INTO v_job, v_ring FROM jobs j WHERE j.state = 'running';
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- ARRAY(...) is an init plan: the open batches are looked up (and locked) once, in
    -- (job_id, seq) order on the partial index of open batches, stopping at the p_count-th.
    WITH claimed AS (
        UPDATE batches b SET state = 'claimed', holder = p_holder, attempts = b.attempts + 1,
               claim_expires_at = clock_timestamp() + make_interval(secs => p_ttl_secs)
         WHERE b.id = ANY (ARRAY(
                   SELECT n.id FROM batches n
                    WHERE n.job_id = v_job AND n.state <> 'done'
                      AND (n.state = 'pending' OR n.claim_expires_at < clock_timestamp())
                    ORDER BY n.seq LIMIT greatest(p_count, 1) FOR UPDATE SKIP LOCKED))
        RETURNING b.id, b.seq, b.attempts, b.size)
    SELECT array_agg(c.id ORDER BY c.seq), array_agg(c.attempts ORDER BY c.seq),
           array_agg(c.size ORDER BY c.seq), max(c.size)
      INTO v_batches, v_attempts, v_sizes, v_need
      FROM claimed c;
    IF v_batches IS NULL THEN
        o_job := v_job;
        o_ring := v_ring;
        RETURN NEXT;
        RETURN;
    END IF;
    -- The keys, as rings_lease_key (schema 14) chooses one, as many as there are batches.
    WITH candidate AS (
        SELECT k.id, k.last_used_at, k.created_at,
               coalesce(k.max_signatures, r.key_max_signatures) IS NOT NULL AS budgeted
          FROM keys k JOIN rings r ON r.name = k.ring
          LEFT JOIN key_leases l ON l.key_id = k.id
         WHERE k.ring = v_ring AND k.state = 'active' AND k.retired_at IS NULL
           AND keys_may_sign(k, r.key_max_signatures, v_need)
           AND (l.key_id IS NULL OR l.expires_at < clock_timestamp())
         ORDER BY k.last_used_at NULLS FIRST, k.created_at, k.id
         LIMIT cardinality(v_batches) FOR UPDATE OF k SKIP LOCKED),
    leased AS (
        INSERT INTO key_leases (key_id, holder, acquired_at, expires_at)
        SELECT c.id, p_holder, clock_timestamp(),
               clock_timestamp() + make_interval(secs => p_ttl_secs)
          FROM candidate c
        ON CONFLICT (key_id) DO UPDATE SET holder = excluded.holder,
            acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
         WHERE key_leases.expires_at < clock_timestamp()
        RETURNING key_id)
    SELECT array_agg(c.id ORDER BY c.last_used_at NULLS FIRST, c.created_at, c.id),
           array_agg(c.budgeted ORDER BY c.last_used_at NULLS FIRST, c.created_at, c.id)
      INTO v_keys, v_budgeted
      FROM candidate c JOIN leased l ON l.key_id = c.id;
    v_leased := coalesce(cardinality(v_keys), 0);
    IF v_leased > 0 THEN
        v_reserved := array_fill(0::bigint, ARRAY[v_leased]);
        IF true = ANY (v_budgeted) THEN
            FOR i IN 1 .. v_leased LOOP
                CONTINUE WHEN NOT v_budgeted[i];
                v_reserved[i] := keys_spend(v_keys[i], v_sizes[i]::bigint);
                IF v_reserved[i] IS NULL THEN
                    -- The window closed since the key was chosen (its row is locked, so its
                    -- budget cannot have moved): give the lease back.
                    DELETE FROM key_leases WHERE key_id = v_keys[i] AND holder = p_holder;
                    v_keys[i] := NULL;
                END IF;
            END LOOP;
        END IF;
        INSERT INTO batch_leases (batch_id, attempt, key_id, holder, leased_at, expires_at,
                                  reserved)
        SELECT p.batch, p.attempt, l.key_id, l.holder, l.acquired_at, l.expires_at, p.reserved
          FROM unnest(v_batches[1:v_leased], v_attempts[1:v_leased], v_keys, v_reserved)
               AS p(batch, attempt, key, reserved)
          JOIN key_leases l ON l.key_id = p.key;
    END IF;
    -- Claims beyond the keys leased go back at once (as `Store::abandon_batch` gives a claim
    -- back), all but the first when no key was idle: that one waits for a key, or finds that no
    -- key may sign it.
    IF cardinality(v_batches) > greatest(v_leased, 1) THEN
        UPDATE batches SET state = 'pending', claim_expires_at = NULL
         WHERE id = ANY (v_batches[greatest(v_leased, 1) + 1:]);
        v_batches := v_batches[1:greatest(v_leased, 1)];
    END IF;
    RETURN QUERY
    SELECT v_job, v_ring, b.id, b.seq, b.first_record, b.last_record, b.attempts,
           v_keys[p.n], r.r_ids, r.r_data, b.size
      FROM unnest(v_batches) WITH ORDINALITY AS p(batch, n)
      JOIN batches b ON b.id = p.batch
      CROSS JOIN LATERAL jobs_unsigned_records(b.first_record - 1, b.last_record, p_page) r
     ORDER BY p.n;
END
$$;
