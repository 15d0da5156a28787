-- signetd schema 2: the Merkle audit log, and the privileges that make it append-only.
--
-- The daemon connects as a login role that is a member of `signetd_app`. That group may read and
-- append audit rows but never update, delete or truncate them; a trigger refuses those too, so
-- even the owner must bypass it deliberately (and `signetd audit verify` then finds the change).

DO $$
BEGIN
    CREATE ROLE signetd_app NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$;

-- One row per leaf. The canonical leaf encoding (signet-merkle, LEAF_FORMAT.md) is derived from
-- these columns; `seq` is the leaf index.
CREATE TABLE audit_entries (
    seq               bigint PRIMARY KEY CHECK (seq >= 0),
    time              timestamptz NOT NULL,
    actor_fingerprint text NOT NULL,
    actor_account     text NOT NULL,
    action            text NOT NULL,
    subject           text NOT NULL,
    params_digest     bytea NOT NULL CHECK (length(params_digest) = 32),
    output_digest     bytea CHECK (output_digest IS NULL OR length(output_digest) = 32),
    result            text NOT NULL
);

-- Hashes of complete subtrees: (level, idx) covers leaves [idx * 2^level, (idx + 1) * 2^level).
-- Level 0 holds the leaf hashes. Proofs read O(log n) of these rows.
CREATE TABLE audit_nodes (
    level smallint NOT NULL CHECK (level >= 0 AND level < 64),
    idx   bigint NOT NULL CHECK (idx >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Signed checkpoints (C2SP signed-note text), one per tree size.
CREATE TABLE audit_checkpoints (
    size       bigint PRIMARY KEY CHECK (size > 0),
    root       bytea NOT NULL CHECK (length(root) = 32),
    note       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_nodes_append_only BEFORE UPDATE OR DELETE ON audit_nodes
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_nodes_no_truncate BEFORE TRUNCATE ON audit_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();

REVOKE ALL ON audit_entries, audit_nodes, audit_checkpoints FROM PUBLIC;
GRANT SELECT, INSERT ON audit_entries, audit_nodes, audit_checkpoints TO signetd_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON keys, ca, accounts, certificates, server_tls TO signetd_app;
