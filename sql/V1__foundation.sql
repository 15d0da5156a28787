-- signetd schema 1: keys held in tokens, the CA, the server certificate, accounts and their
-- client certificates. Applied by the daemon at start under an advisory lock.

-- Every key the daemon uses. The private key lives in the token named `token` under `label`;
-- only its public half is stored here.
CREATE TABLE keys (
    id          uuid PRIMARY KEY,
    token       text NOT NULL,
    label       text NOT NULL,
    algorithm   text NOT NULL CHECK (algorithm IN ('rsa-2048', 'rsa-3072', 'rsa-4096', 'ec-p256', 'ec-p384', 'ed25519')),
    purpose     text NOT NULL CHECK (purpose IN ('ca', 'tls', 'audit', 'signing')),
    public_key  bytea NOT NULL,               -- SubjectPublicKeyInfo DER
    fingerprint text NOT NULL UNIQUE,         -- SHA-256 of public_key, hex
    state       text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'retired', 'missing')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (token, label)
);

-- The certificate authority: one row.
CREATE TABLE ca (
    id          smallint PRIMARY KEY CHECK (id = 1),
    key_id      uuid NOT NULL REFERENCES keys (id),
    certificate bytea NOT NULL,               -- DER
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,62}$'),
    roles      text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);

-- Certificates the CA issued. `status` is the live revocation state checked on every request.
CREATE TABLE certificates (
    serial            text PRIMARY KEY,        -- hex, lower case, no leading zero byte
    account_id        uuid REFERENCES accounts (id),
    profile           text NOT NULL CHECK (profile IN ('mtls-client', 'tls-server', 'document-signer')),
    subject           text NOT NULL,
    fingerprint       text NOT NULL UNIQUE,    -- SHA-256 of the DER, hex
    der               bytea NOT NULL,
    not_before        timestamptz NOT NULL,
    not_after         timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'held', 'revoked')),
    revocation_reason text,
    status_changed_at timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX certificates_account ON certificates (account_id);

-- The API listener's server certificate and its key: one row.
CREATE TABLE server_tls (
    id          smallint PRIMARY KEY CHECK (id = 1),
    key_id      uuid NOT NULL REFERENCES keys (id),
    serial      text NOT NULL REFERENCES certificates (serial),
    names       text[] NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
