-- signetd schema 3: key rings, key usage (for least-recently-used scheduling), and key leases
-- that keep one key in one operation at a time across daemon processes (invariant 2).

CREATE TABLE rings (
    name       text PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    algorithm  text NOT NULL CHECK (algorithm IN ('rsa-2048', 'rsa-3072', 'rsa-4096', 'ec-p256', 'ec-p384', 'ed25519')),
    token      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE keys
    ADD COLUMN ring         text REFERENCES rings (name),
    ADD COLUMN usage_count  bigint NOT NULL DEFAULT 0,
    ADD COLUMN last_used_at timestamptz,
    ADD COLUMN retired_at   timestamptz;
CREATE INDEX keys_ring_lru ON keys (ring, last_used_at NULLS FIRST) WHERE ring IS NOT NULL;

-- A key is leased by at most one holder (a daemon process and purpose) until `expires_at`;
-- holders renew while they use the key. An expired lease may be taken over.
CREATE TABLE key_leases (
    key_id      uuid PRIMARY KEY REFERENCES keys (id),
    holder      text NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE, DELETE ON rings, key_leases TO signetd_app;
