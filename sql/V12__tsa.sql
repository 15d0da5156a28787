-- signetd schema 12: the time-stamping authority (RFC 3161) — its key and certificate (profile
-- `tsa`, purpose `tsa`), and the one row every daemon sharing the database takes its token
-- serial numbers and its clock check from.

ALTER TABLE certificates DROP CONSTRAINT certificates_profile_check;
ALTER TABLE certificates ADD CONSTRAINT certificates_profile_check
    CHECK (profile IN ('mtls-client', 'tls-server', 'document-signer', 'ocsp-responder', 'tsa'));
ALTER TABLE keys DROP CONSTRAINT keys_purpose_check;
ALTER TABLE keys ADD CONSTRAINT keys_purpose_check
    CHECK (purpose IN ('ca', 'tls', 'audit', 'signing', 'ocsp', 'tsa'));

-- The TSA key and its current certificate: one row, replaced on renewal.
CREATE TABLE tsa (
    id         smallint PRIMARY KEY CHECK (id = 1),
    key_id     uuid NOT NULL REFERENCES keys (id),
    serial     text NOT NULL REFERENCES certificates (serial),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The last token's serial number and genTime. A stamp locks the row, reads its own clock,
-- refuses if that clock is behind `last_time`, and moves both forward: serials are unique
-- across daemons and genTime never goes backwards.
CREATE TABLE tsa_clock (
    id        smallint PRIMARY KEY CHECK (id = 1),
    serial    bigint NOT NULL CHECK (serial >= 0),
    last_time timestamptz NOT NULL
);
INSERT INTO tsa_clock (id, serial, last_time) VALUES (1, 0, 'epoch');

REVOKE ALL ON tsa, tsa_clock FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON tsa TO signetd_app;
GRANT SELECT, UPDATE ON tsa_clock TO signetd_app;
