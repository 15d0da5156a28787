"""schemathesis hooks for signetd's OpenAPI test (daemon/tests/openapi.rs).

The time-stamp and OCSP endpoints take DER requests under their protocols' own media types
(RFC 3161 application/timestamp-query, RFC 6960 application/ocsp-request), which schemathesis
cannot serialise by itself: the generated value (a string, per the document's binary schema)
is sent as its bytes.
"""

import schemathesis


@schemathesis.serializer("application/timestamp-query", "application/ocsp-request")
def der_request(ctx, value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")
