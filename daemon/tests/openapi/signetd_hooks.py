"""Schemathesis hooks for daemon/tests/openapi.rs (loaded through SCHEMATHESIS_HOOKS).

Schemathesis generates and reads JSON, forms and text by itself; the signing daemon also takes
and answers DER, RPM and other binary media types, which it neither generates nor reads. Without
these hooks the operations that take them would send nothing (an error, not a test: the
time-stamp and OCSP requests, RFC 3161 application/timestamp-query and RFC 6960
application/ocsp-request, among them) and their answers' bodies would not be checked against the
document at all. They also make requests that name the test's ring consistent with what the
document says only in prose (see `before_call`).
"""

import json
import os
import urllib.parse

import schemathesis
from hypothesis import strategies as st

# Request bodies the document declares in media types Schemathesis cannot generate: random bytes
# (bounded: the point is the daemon's answers, not its throughput) or, often, a real
# sample the test made (a time-stamp query, an OCSP request, a CSR, a package), so that these
# operations are also answered 200 and those answers are checked too. The test writes each
# sample as SIGNETD_OPENAPI_SAMPLES/<media type with "/" as "_">.
_SAMPLES = os.environ.get("SIGNETD_OPENAPI_SAMPLES")


def _body(media_type):
    random_bytes = st.binary(min_size=0, max_size=2048)
    path = os.path.join(_SAMPLES or "", media_type.replace("/", "_"))
    if _SAMPLES and os.path.isfile(path):
        with open(path, "rb") as f:
            return st.just(f.read()) | random_bytes
    return random_bytes


for media_type in (
    "application/ocsp-request",
    "application/timestamp-query",
    "application/pkcs10",
    "application/x-rpm",
):
    schemathesis.openapi.media_type(media_type, _body(media_type))

_JSON_SCALAR = st.none() | st.booleans() | st.integers() | st.text(max_size=40)
_NDJSON = st.lists(
    st.dictionaries(st.text(max_size=12), _JSON_SCALAR, max_size=4).map(json.dumps)
    | st.text(max_size=40),
    max_size=5,
).map(lambda lines: "\n".join(lines).encode())
schemathesis.openapi.media_type("application/x-ndjson", _NDJSON)


# Answers the document declares as binary (`type: string`, `format: binary`). Read as a string
# of bytes (latin-1 maps every byte), so response_schema_conformance checks them against the
# document like every other answer instead of skipping them.
@schemathesis.deserializer(
    "application/pkix-cert",
    "application/pkix-crl",
    "application/ocsp-response",
    "application/timestamp-reply",
    "application/pkcs7-signature",
    "application/pgp-keys",
    "application/pgp-signature",
    "application/x-pem-file",
    "application/x-rpm",
    "application/octet-stream",
)
def _binary(ctx, response):
    return response.content.decode("latin-1")


# What the document says only in prose, which generated requests would otherwise almost never
# satisfy: a request names its target by `ring` or by `key_id`, not both; `padding` is for RSA
# keys (the test's ring is ECDSA); data comes as `data` or as `digest`, not both; and a JSON
# verification carries `format`, `ring` and `key_id` in its body, not in the query (those are
# for multipart forms). When a request names the test's ring, it is made to say so alone, just
# before it is sent (a `map_case` hook would do it at generation, where Schemathesis then
# refuses most cases as filtered out); all other combinations stay as generated (and are
# answered 400). And the OCSP request of `GET /ocsp/{request}` replaces its placeholder: it is
# base64, which may hold a `/`, which Schemathesis never generates into a path parameter.
_RING = os.environ.get("SIGNETD_OPENAPI_RING")
_OCSP_PLACEHOLDER = os.environ.get("SIGNETD_OPENAPI_OCSP_PLACEHOLDER")
_OCSP_GET = os.environ.get("SIGNETD_OPENAPI_OCSP_GET")


@schemathesis.hook
def before_call(ctx, case, kwargs):
    for part in (case.query, case.body):
        if _RING and isinstance(part, dict) and part.get("ring") == _RING:
            part.pop("key_id", None)
            part.pop("padding", None)
    if isinstance(case.body, dict):
        items = case.body.get("items")
        for item in [case.body] + (items if isinstance(items, list) else []):
            if isinstance(item, dict) and item.get("data") is not None:
                item.pop("digest", None)
    if (
        case.operation.path == "/v1/verify"
        and case.media_type == "application/json"
        and isinstance(case.query, dict)
    ):
        for name in ("format", "ring", "key_id"):
            case.query.pop(name, None)
    path_parameters = case.path_parameters
    if (
        _OCSP_PLACEHOLDER
        and isinstance(path_parameters, dict)
        and path_parameters.get("request") == _OCSP_PLACEHOLDER
    ):
        path_parameters["request"] = urllib.parse.quote(_OCSP_GET, safe="")
