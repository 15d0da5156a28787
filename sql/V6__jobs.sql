-- signetd schema 6: batch record signing. Records, the one signature each may get (invariant 6),
-- jobs, their batches, and the history of the key leases that batches took.

-- The records to sign. Append-only for the daemon: a record's data never changes once stored,
-- so a signature over it stays valid.
CREATE TABLE records (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A job signs every record that was unsigned when it was created, with the keys of one ring, in
-- batches of `batch_size` records (fixed for the job's life). At most one job runs at a time:
-- two would race for the same records.
CREATE TABLE jobs (
    id          uuid PRIMARY KEY,
    ring        text NOT NULL REFERENCES rings (name),
    batch_size  integer NOT NULL CHECK (batch_size > 0),
    state       text NOT NULL CHECK (state IN ('running', 'done', 'cancelled')),
    total       bigint NOT NULL DEFAULT 0 CHECK (total >= 0),
    batch_count integer NOT NULL DEFAULT 0 CHECK (batch_count >= 0),
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at timestamptz
);
CREATE UNIQUE INDEX jobs_one_running ON jobs ((true)) WHERE state = 'running';

-- The batches of a job, cut when the job is created: `size` unsigned records with ids in
-- [first_record, last_record]. A worker claims one (`FOR UPDATE SKIP LOCKED`) until
-- `claim_expires_at`, renewing while it works; the claim is the pair (holder, attempts), so a
-- worker whose claim expired and was taken over cannot finish the batch. `key_id`, `signed`,
-- `root` (RFC 6962 root of the batch's leaves) and `finished_at` are set when it is done.
CREATE TABLE batches (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id           uuid NOT NULL REFERENCES jobs (id),
    seq              integer NOT NULL CHECK (seq >= 0),
    first_record     bigint NOT NULL,
    last_record      bigint NOT NULL,
    size             integer NOT NULL CHECK (size > 0),
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'claimed', 'done')),
    holder           text,
    attempts         integer NOT NULL DEFAULT 0,
    claim_expires_at timestamptz,
    key_id           uuid REFERENCES keys (id),
    signed           integer NOT NULL DEFAULT 0,
    root             bytea CHECK (root IS NULL OR length(root) = 32),
    finished_at      timestamptz,
    UNIQUE (job_id, seq),
    CHECK (first_record <= last_record),
    CHECK (state <> 'done' OR (key_id IS NOT NULL AND root IS NOT NULL AND finished_at IS NOT NULL))
);
CREATE INDEX batches_open ON batches (job_id, seq) WHERE state <> 'done';

-- Invariant 6: the primary key makes a second signature for a record impossible.
CREATE TABLE signatures (
    record_id  bigint PRIMARY KEY REFERENCES records (id),
    batch_id   bigint NOT NULL REFERENCES batches (id),
    leaf_index integer NOT NULL CHECK (leaf_index >= 0),
    signature  bytea NOT NULL,
    UNIQUE (batch_id, leaf_index)
);

-- Every key lease a batch attempt took: when it began (key_leases.acquired_at), its expiry as
-- last renewed, and when it was released. `released_at IS NULL` means the holder died with the
-- lease; it ended at `expires_at`. Lets anyone check that two leases of one key never overlap.
CREATE TABLE batch_leases (
    batch_id    bigint NOT NULL REFERENCES batches (id),
    attempt     integer NOT NULL,
    key_id      uuid NOT NULL REFERENCES keys (id),
    holder      text NOT NULL,
    leased_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    released_at timestamptz,
    outcome     text CHECK (outcome IN ('done', 'abandoned')),
    PRIMARY KEY (batch_id, attempt)
);
CREATE INDEX batch_leases_key ON batch_leases (key_id, leased_at);

-- A batch's audit entry is found by its subject (`job:<id>/batch:<seq>`), for per-record proofs.
CREATE INDEX audit_entries_job_batch ON audit_entries (subject)
    WHERE action = 'jobs.batch' AND result = 'ok';

-- Gives a key lease of a batch back: deletes the lease row and records the use. The key's
-- last use is when the batch *began* (the lease's acquired_at), not when it ended: with many
-- batches in flight, ordering by end time lets a key that started later overtake one that
-- started earlier, and per-key counts drift apart; ordering by start time is a round robin.
-- Returns false when `p_holder` does not hold the lease.
CREATE FUNCTION jobs_release_key(p_key uuid, p_holder text, p_used bigint)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_leased timestamptz;
BEGIN
    DELETE FROM key_leases WHERE key_id = p_key AND holder = p_holder
        RETURNING acquired_at INTO v_leased;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE keys SET last_used_at = greatest(last_used_at, v_leased),
                    usage_count = usage_count + p_used
     WHERE id = p_key;
    PERFORM pg_notify('signetd_jobs', 'key');
    RETURN true;
END
$$;

-- Finishes a batch inside the audit writer's transaction, atomically with its audit entry:
-- checks that the caller still holds the batch claim and the key lease and that the job still
-- runs, stores the signatures (leaf i = the i-th record), marks the batch and its lease done,
-- releases the key (jobs_release_key; waiting workers are woken by NOTIFY, delivered at
-- commit) and marks the job done after its last batch. Returns whether the job is done.
-- Errors: SJ001 claim lost, SJ002 job not running, SJ003 lease lost, SJ004 bad arguments,
-- 23505 a record is signed already.
CREATE FUNCTION jobs_finish_batch(
    p_batch bigint, p_holder text, p_attempt integer, p_key uuid,
    p_records bigint[], p_signatures bytea[], p_root bytea
) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    v_job   uuid;
    v_first bigint;
    v_last  bigint;
    v_state text;
    v_now   timestamptz;
BEGIN
    SELECT job_id, first_record, last_record INTO v_job, v_first, v_last FROM batches
     WHERE id = p_batch AND state = 'claimed' AND holder = p_holder AND attempts = p_attempt
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'batch % is no longer claimed by this worker', p_batch
            USING ERRCODE = 'SJ001';
    END IF;
    SELECT state INTO v_state FROM jobs WHERE id = v_job FOR SHARE;
    IF v_state IS DISTINCT FROM 'running' THEN
        RAISE EXCEPTION 'job % is %', v_job, v_state USING ERRCODE = 'SJ002';
    END IF;
    PERFORM 1 FROM key_leases
      WHERE key_id = p_key AND holder = p_holder AND expires_at >= clock_timestamp()
        FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the lease of key % was lost', p_key USING ERRCODE = 'SJ003';
    END IF;
    IF coalesce(cardinality(p_records), 0) <> coalesce(cardinality(p_signatures), 0)
       OR EXISTS (SELECT 1 FROM unnest(p_records) AS r(id) WHERE r.id < v_first OR r.id > v_last)
       OR length(p_root) <> 32 THEN
        RAISE EXCEPTION 'bad arguments for batch %', p_batch USING ERRCODE = 'SJ004';
    END IF;
    INSERT INTO signatures (record_id, batch_id, leaf_index, signature)
        SELECT u.r, p_batch, (u.n - 1)::integer, u.s
          FROM unnest(p_records, p_signatures) WITH ORDINALITY AS u(r, s, n);
    v_now := clock_timestamp();
    UPDATE batches SET state = 'done', key_id = p_key, signed = cardinality(p_records),
           root = p_root, finished_at = v_now, claim_expires_at = NULL
     WHERE id = p_batch;
    UPDATE batch_leases SET released_at = v_now, outcome = 'done'
     WHERE batch_id = p_batch AND attempt = p_attempt;
    PERFORM jobs_release_key(p_key, p_holder, coalesce(cardinality(p_records), 0)::bigint);
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

-- The daemon may add records and signatures, never change or remove them.
GRANT SELECT, INSERT ON records, signatures TO signetd_app;
GRANT SELECT, INSERT, UPDATE ON jobs, batches, batch_leases TO signetd_app;
