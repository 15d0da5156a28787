-- signetd schema 4: the certificate authority at run time — revocation reasons, document-signer
-- certificates of token keys, the revocation epoch that invalidates OCSP caches, the CRLs the CA
-- signed (numbered, append-only), and the delegated OCSP responder.

-- Certificates of delegated OCSP responders; keys of those responders live in a token too.
ALTER TABLE certificates DROP CONSTRAINT certificates_profile_check;
ALTER TABLE certificates ADD CONSTRAINT certificates_profile_check
    CHECK (profile IN ('mtls-client', 'tls-server', 'document-signer', 'ocsp-responder'));
ALTER TABLE keys DROP CONSTRAINT keys_purpose_check;
ALTER TABLE keys ADD CONSTRAINT keys_purpose_check
    CHECK (purpose IN ('ca', 'tls', 'audit', 'signing', 'ocsp'));

-- RFC 5280 CRLReason names. A held certificate carries certificateHold; a revoked one any other
-- reason; an active one none. The status and its time move together.
ALTER TABLE certificates ADD CONSTRAINT certificates_revocation_reason_check
    CHECK (revocation_reason IN ('unspecified', 'keyCompromise', 'affiliationChanged',
                                 'superseded', 'cessationOfOperation', 'certificateHold',
                                 'privilegeWithdrawn'));
ALTER TABLE certificates ADD CONSTRAINT certificates_status_reason_check
    CHECK ((status = 'active' AND revocation_reason IS NULL)
        OR (status = 'held' AND revocation_reason = 'certificateHold' AND status_changed_at IS NOT NULL)
        OR (status = 'revoked' AND revocation_reason IS NOT NULL
            AND revocation_reason <> 'certificateHold' AND status_changed_at IS NOT NULL));

-- A document-signer certificate may certify a key held in a token (instead of an account's key).
ALTER TABLE certificates ADD COLUMN key_id uuid REFERENCES keys (id);
CREATE INDEX certificates_key ON certificates (key_id) WHERE key_id IS NOT NULL;
-- The CRL lists held and revoked certificates.
CREATE INDEX certificates_not_active ON certificates (status) WHERE status <> 'active';

-- One row: bumped in the same transaction as every status change, so that a cached OCSP
-- response or a CRL made at an older epoch is known to be stale, in every process.
CREATE TABLE revocation_epoch (
    id    smallint PRIMARY KEY CHECK (id = 1),
    epoch bigint NOT NULL CHECK (epoch >= 0)
);
INSERT INTO revocation_epoch (id, epoch) VALUES (1, 0);

-- Every CRL the CA signed. `number` is the CRL number inside it: it only grows (the signer
-- takes an advisory lock, reads the greatest number and adds one). `epoch` is the revocation
-- epoch the CRL reflects. The newest row is the one served.
CREATE TABLE crls (
    number      bigint PRIMARY KEY CHECK (number > 0),
    epoch       bigint NOT NULL,
    this_update timestamptz NOT NULL,
    next_update timestamptz NOT NULL CHECK (next_update > this_update),
    der         bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The delegated OCSP responder (when ca.ocsp_responder = "delegated"): one row.
CREATE TABLE ocsp_responder (
    id         smallint PRIMARY KEY CHECK (id = 1),
    key_id     uuid NOT NULL REFERENCES keys (id),
    serial     text NOT NULL REFERENCES certificates (serial),
    updated_at timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON revocation_epoch, crls, ocsp_responder FROM PUBLIC;
GRANT SELECT, UPDATE ON revocation_epoch TO signetd_app;
-- CRLs are only ever added.
GRANT SELECT, INSERT ON crls TO signetd_app;
GRANT SELECT, INSERT, UPDATE ON ocsp_responder TO signetd_app;
