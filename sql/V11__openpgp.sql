-- signetd schema 11: OpenPGP identities of ring keys (issue 14).
--
-- A ring names the User ID its keys' OpenPGP certificates carry (NULL: the default,
-- `signetd ring <name>`). A key's OpenPGP v4 key packet is built from its public key and its
-- `created_at` (whole seconds), so its fingerprint is fixed from the key's creation and never
-- changes; the certificate (key packet, User ID, self-certification made in the token) is
-- stored once, when first asked for, and served from here afterwards, also after the key is
-- retired. Only the first certificate is kept: the column is written only while NULL.
ALTER TABLE rings
    ADD COLUMN openpgp_user_id text
        CHECK (openpgp_user_id IS NULL
               OR (octet_length(openpgp_user_id) BETWEEN 1 AND 1024
                   AND openpgp_user_id !~ '[\r\n]'));

ALTER TABLE keys
    ADD COLUMN openpgp_certificate bytea;
