//! Fuzz-style hostile input (issue 13): thousands of requests built from hostile strings — NUL,
//! lone surrogates, invalid UTF-8, 100 KB values, shell metacharacters, `--option` strings, path
//! traversal, CR/LF, quotes, JSON of the wrong type — sent into every path segment, query
//! parameter and JSON field of every route of the API, public and metrics listeners, one value
//! in one place at a time, by a client holding every role and by a client holding none.
//!
//! Every answer must be below 500; every error answer problem+json whose `status` is the HTTP
//! status (the one documented exception: a malformed OCSP request gets the protocol's own
//! `malformedRequest`, HTTP 400 `application/ocsp-response`); a 2xx JSON answer must be JSON.
//! Afterwards the daemon still signs, nothing ran the shell text, and `signetd audit verify`
//! passes.
//!
//! The route table below is checked against the routers' source: a route (or a method of one)
//! added without an entry here fails the test and is named.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::sign::{Client, account, generate, sign_file, write};
use support::{Daemon, Instance, s};

/// The source files that define routes, as the routers are built from them.
const ROUTER_SOURCES: [(&str, &str); 7] = [
    ("api/mod.rs", include_str!("../src/api/mod.rs")),
    ("api/albs.rs", include_str!("../src/api/albs.rs")),
    ("api/sign.rs", include_str!("../src/api/sign.rs")),
    ("api/pki.rs", include_str!("../src/api/pki.rs")),
    ("api/jobs.rs", include_str!("../src/api/jobs.rs")),
    ("api/timestamp.rs", include_str!("../src/api/timestamp.rs")),
    ("api/limits.rs", include_str!("../src/api/limits.rs")),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Listener {
    Api,
    Public,
    Metrics,
}

/// The body a row sends as its base.
#[derive(Debug, Clone, Copy)]
enum BodyKind {
    None,
    /// JSON (`application/json`) from a template; a string `"{name}"` is replaced by the context
    /// value `name`.
    Json(&'static str),
    /// The bytes of the context value `.1`, sent as content type `.0`.
    Raw(&'static str, &'static str),
}

/// One line of the route table: a route as the router names it, the base request (valid
/// wherever it is not fuzzed), and where hostile values go.
#[derive(Debug, Clone)]
struct Row {
    listener: Listener,
    method: &'static str,
    /// The route template exactly as in `.route("…")`.
    route: &'static str,
    /// Context keys of the base values of the path parameters, in order.
    args: &'static [&'static str],
    /// Whether hostile values go into the path parameters (once per route is enough).
    fuzz_path: bool,
    /// The base query, `name=value&…`; a value `{name}` is taken from the context.
    query: &'static str,
    /// Query parameters that get hostile values (added when not in the base).
    query_slots: &'static [&'static str],
    body: BodyKind,
    /// Where hostile values go in the body: JSON pointers; `""` is the whole body, a last
    /// segment `+` a new member named by the hostile value. For a raw body only `""`.
    body_slots: &'static [&'static str],
}

fn row(listener: Listener, method: &'static str, route: &'static str) -> Row {
    Row {
        listener,
        method,
        route,
        args: &[],
        fuzz_path: true,
        query: "",
        query_slots: &[],
        body: BodyKind::None,
        body_slots: &[],
    }
}

impl Row {
    fn args(mut self, args: &'static [&'static str]) -> Row {
        self.args = args;
        self
    }
    fn no_path(mut self) -> Row {
        self.fuzz_path = false;
        self
    }
    fn query(mut self, base: &'static str, slots: &'static [&'static str]) -> Row {
        self.query = base;
        self.query_slots = slots;
        self
    }
    fn json(mut self, base: &'static str, slots: &'static [&'static str]) -> Row {
        self.body = BodyKind::Json(base);
        self.body_slots = slots;
        self
    }
    fn raw(mut self, content_type: &'static str, ctx: &'static str, fuzz: bool) -> Row {
        self.body = BodyKind::Raw(content_type, ctx);
        self.body_slots = if fuzz { &[""] } else { &[] };
        self
    }
}

/// Every route of every listener, with its base request and its fuzzed places. Routes that
/// take no parameter at all get hostile values in an unknown query parameter `x`.
fn route_table() -> Vec<Row> {
    use Listener::{Api, Metrics, Public};
    let nothing: &'static [&'static str] = &["x"];
    vec![
        row(Api, "GET", "/v1/whoami").query("", nothing),
        row(Api, "GET", "/v1/audit/checkpoint").query("", nothing),
        row(Api, "GET", "/v1/audit/entries")
            .query("from=0&limit=2", &["from", "limit", "wait", "x"]),
        row(Api, "GET", "/v1/audit/proof/inclusion").query("seq=0", &["seq", "size", "x"]),
        row(Api, "GET", "/v1/audit/proof/consistency").query("from=1&to=2", &["from", "to", "x"]),
        row(Api, "GET", "/v1/audit/key").query("", nothing),
        // Signing.
        row(Api, "POST", "/v1/sign")
            .query(
                "ring={ring}",
                &[
                    "ring",
                    "hash",
                    "padding",
                    "encoding",
                    "prehashed",
                    "format",
                    "armor",
                    "text",
                    "pem",
                    "timestamp",
                    "x",
                ],
            )
            .raw("application/octet-stream", "data", true),
        row(Api, "POST", "/v1/sign")
            .no_path()
            .query("ring={ring}&format=raw,openpgp", &["format", "hash"])
            .raw("multipart/form-data; boundary=FuzzBoundary", "form", true),
        row(Api, "POST", "/v1/sign").query("", &["key_id"]).raw(
            "application/octet-stream",
            "data",
            false,
        ),
        row(Api, "POST", "/v1/sign-batch").json(
            r#"{"ring":"{ring}","items":[{"data":"aGVsbG8="}]}"#,
            &[
                "",
                "/ring",
                "/hash",
                "/padding",
                "/encoding",
                "/atomic",
                "/items",
                "/items/0",
                "/items/0/data",
                "/+",
                "/items/0/+",
            ],
        ),
        row(Api, "POST", "/v1/sign-batch").json(
            r#"{"key_id":"{key}","items":[{"digest":"{digest}"}]}"#,
            &["/key_id", "/items/0/digest"],
        ),
        row(Api, "POST", "/v1/verify").json(
            r#"{"ring":"{ring}","data":"aGVsbG8=","signature":"AA=="}"#,
            &[
                "",
                "/ring",
                "/hash",
                "/padding",
                "/encoding",
                "/data",
                "/signature",
                "/+",
            ],
        ),
        row(Api, "POST", "/v1/verify").json(
            r#"{"key_id":"{key}","digest":"{digest}","signature":"AA=="}"#,
            &["/key_id", "/digest"],
        ),
        row(Api, "POST", "/v1/verify").json(
            r#"{"format":"cms","data":"aGVsbG8=","signature":"AA=="}"#,
            &["/format", "/signature"],
        ),
        row(Api, "POST", "/v1/verify")
            .no_path()
            .query("format=openpgp", &["format", "ring", "key_id", "x"])
            .raw("multipart/form-data; boundary=FuzzBoundary", "form", true),
        row(Api, "GET", "/v1/rings").query("", nothing),
        row(Api, "POST", "/v1/rings").json(
            r#"{"name":"fresh","algorithm":"ec-p256"}"#,
            &["", "/name", "/algorithm", "/token", "/+"],
        ),
        row(Api, "GET", "/v1/rings/{ring}")
            .args(&["ring"])
            .query("", nothing),
        row(Api, "POST", "/v1/rings/{ring}/keys")
            .args(&["ring"])
            .json(
                r#"{"algorithm":"ec-p256","count":1}"#,
                &["", "/algorithm", "/count", "/token", "/+"],
            ),
        row(Api, "GET", "/v1/keys").query("", &["ring", "x"]),
        row(Api, "GET", "/v1/keys/{id}")
            .args(&["key"])
            .query("", nothing),
        row(Api, "POST", "/v1/keys/{id}/retire").args(&["key2"]),
        row(Api, "GET", "/v1/keys/{id}/limits")
            .args(&["key"])
            .query("", nothing),
        row(Api, "PUT", "/v1/keys/{id}/limits")
            .args(&["key2"])
            .json(
                r#"{"max_signatures":1000000,"usable_until":"2099-01-01T00:00:00Z"}"#,
                &["", "/max_signatures", "/usable_until", "/+"],
            ),
        row(Api, "PUT", "/v1/rings/{ring}/limits")
            .args(&["ring"])
            .json(
                r#"{"key_max_signatures":1000000}"#,
                &["", "/key_max_signatures", "/+"],
            ),
        row(Api, "GET", "/v1/keys/{id}/openpgp")
            .args(&["key"])
            .query("", &["armor", "x"]),
        // The albs-sign-file surface.
        row(Api, "POST", "/sign")
            .query("keyid={keyid}", &["keyid", "sign_type", "sign_algo", "x"])
            .raw("multipart/form-data; boundary=FuzzBoundary", "form", true),
        row(Api, "POST", "/sign-batch")
            .query("keyid={keyid}", &["keyid", "sign_type", "sign_algo", "x"])
            .raw(
                "multipart/form-data; boundary=FuzzBoundary",
                "batch_form",
                true,
            ),
        row(Api, "POST", "/sign-rpm")
            .query("keyid={keyid}", &["keyid", "x"])
            .raw("multipart/form-data; boundary=FuzzBoundary", "form", true),
        row(Api, "POST", "/v1/sign-rpm")
            .query("ring={ring}", &["ring", "key_id", "x"])
            .raw("application/x-rpm", "data", true),
        row(Api, "POST", "/v1/timestamp").query("", nothing).raw(
            "application/timestamp-query",
            "data",
            true,
        ),
        row(Api, "GET", "/keys").query("", nothing),
        row(Api, "GET", "/ping").query("", nothing),
        // The certificate authority.
        row(Api, "GET", "/v1/accounts").query("", &["deleted", "x"]),
        row(Api, "POST", "/v1/accounts").json(
            r#"{"name":"fresh","roles":["signer:{ring}"]}"#,
            &["", "/name", "/roles", "/roles/0", "/+"],
        ),
        row(Api, "GET", "/v1/accounts/{name}")
            .args(&["account"])
            .query("", nothing),
        row(Api, "DELETE", "/v1/accounts/{name}").args(&["account"]),
        row(Api, "GET", "/v1/accounts/{name}/certificates")
            .args(&["account"])
            .query("", nothing),
        row(Api, "POST", "/v1/accounts/{name}/certificates")
            .args(&["account"])
            .query(
                "profile=mtls-client&format=json",
                &["profile", "validity_days", "names", "format", "x"],
            )
            .raw("application/pkcs10", "csr", true),
        row(Api, "POST", "/v1/accounts/{name}/certificates")
            .args(&["account"])
            .no_path()
            .json(
                r#"{"profile":"mtls-client","csr":"{csr}","names":[]}"#,
                &[
                    "",
                    "/profile",
                    "/csr",
                    "/validity_days",
                    "/names",
                    "/names/0",
                    "/+",
                ],
            ),
        // A TLS server certificate's names become its subject and subjectAltName.
        row(Api, "POST", "/v1/accounts/{name}/certificates")
            .args(&["account"])
            .no_path()
            .query(
                "profile=tls-server&names=fuzz.example&format=pem",
                &["names"],
            )
            .raw("application/pkcs10", "csr", false),
        row(Api, "POST", "/v1/accounts/{name}/certificates")
            .args(&["account"])
            .no_path()
            .json(
                r#"{"profile":"tls-server","csr":"{csr}","names":["fuzz.example"]}"#,
                &["/names/0", "/names/1"],
            ),
        row(Api, "GET", "/v1/certificates/{serial}")
            .args(&["serial"])
            .query("", &["format", "x"]),
        row(Api, "POST", "/v1/certificates/{serial}/deactivate").args(&["serial"]),
        row(Api, "POST", "/v1/certificates/{serial}/activate").args(&["serial"]),
        row(Api, "POST", "/v1/certificates/{serial}/revoke")
            .args(&["serial"])
            .json(r#"{"reason":"superseded"}"#, &["", "/reason", "/+"]),
        row(Api, "GET", "/v1/keys/{id}/certificate")
            .args(&["key"])
            .query("", &["format", "x"]),
        row(Api, "POST", "/v1/keys/{id}/certificate")
            .args(&["key"])
            .query("", &["format"])
            .json(
                r#"{"subject":"CN=fuzz","validity_days":30}"#,
                &["", "/subject", "/validity_days", "/+"],
            ),
        // Records and jobs.
        row(Api, "POST", "/v1/records").json(
            r#"{"records":[{"text":"hello"}]}"#,
            &[
                "",
                "/records",
                "/records/0",
                "/records/0/text",
                "/+",
                "/records/0/+",
            ],
        ),
        row(Api, "POST", "/v1/records").json(r#"[{"data":"aGVsbG8="}]"#, &["/0/data"]),
        row(Api, "GET", "/v1/records/{id}/proof")
            .args(&["record"])
            .query("", &["size", "x"]),
        row(Api, "GET", "/v1/jobs").query("", &["limit", "x"]),
        row(Api, "POST", "/v1/jobs").json(
            r#"{"ring":"{ring}","batch_size":0}"#,
            &["", "/ring", "/batch_size", "/+"],
        ),
        row(Api, "GET", "/v1/jobs/{id}")
            .args(&["job"])
            .query("", nothing),
        row(Api, "POST", "/v1/jobs/{id}/cancel").args(&["job"]),
        // The public listener.
        row(Public, "GET", "/healthz").query("", nothing),
        row(Public, "GET", "/readyz").query("", nothing),
        row(Public, "GET", "/ca.pem").query("", nothing),
        row(Public, "GET", "/ca.der").query("", nothing),
        row(Public, "GET", "/crl.der").query("", nothing),
        row(Public, "GET", "/crl.pem").query("", nothing),
        row(Public, "GET", "/tsa.pem").query("", nothing),
        row(Public, "GET", "/tsa.der").query("", nothing),
        row(Public, "POST", "/ocsp").query("", nothing).raw(
            "application/ocsp-request",
            "ocsp_der",
            true,
        ),
        row(Public, "GET", "/ocsp/{*request}")
            .args(&["ocsp_get"])
            .query("", nothing),
        // The metrics listener.
        row(Metrics, "GET", "/metrics").query("", nothing),
    ]
}

/// `(listener, method, route)` of every route the routers' source defines.
fn routes_in_source() -> BTreeSet<(Listener, String, String)> {
    let mut found = BTreeSet::new();
    for (file, text) in ROUTER_SOURCES {
        // In api/mod.rs the public and metrics routers are their own functions; everything
        // else is on the API listener.
        let public_at = text.find("pub fn public_router").unwrap_or(text.len());
        let metrics_at = text.find("pub fn metrics_router").unwrap_or(text.len());
        let mut rest = 0;
        while let Some(at) = text[rest..].find(".route(") {
            let start = rest + at + ".route(".len();
            // The arguments, to the matching parenthesis.
            let mut depth = 1;
            let mut end = start;
            for (i, c) in text[start..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    end = start + i;
                    break;
                }
            }
            assert!(end > start, "{file}: unbalanced .route( at byte {start}");
            let args = &text[start..end];
            let open = args
                .find('"')
                .unwrap_or_else(|| panic!("{file}: a .route( without a path: {args}"));
            let close = open + 1 + args[open + 1..].find('"').unwrap();
            let path = &args[open + 1..close];
            let handlers = &args[close + 1..];
            let listener = if file == "api/mod.rs" && start > metrics_at {
                Listener::Metrics
            } else if file == "api/mod.rs" && start > public_at {
                Listener::Public
            } else {
                Listener::Api
            };
            let mut methods = 0;
            for (name, method) in [
                ("get(", "GET"),
                ("post(", "POST"),
                ("put(", "PUT"),
                ("delete(", "DELETE"),
                ("patch(", "PATCH"),
                ("head(", "HEAD"),
                ("options(", "OPTIONS"),
                ("any(", "ANY"),
            ] {
                let mut from = 0;
                while let Some(i) = handlers[from..].find(name) {
                    let i = from + i;
                    let before = handlers[..i].chars().next_back();
                    // A method router (`get(…)`, `.post(…)`, `routing::post(…)`), not a
                    // handler whose name ends like one (`crl_get(`).
                    if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                        found.insert((listener, method.to_owned(), path.to_owned()));
                        methods += 1;
                    }
                    from = i + name.len();
                }
            }
            assert!(
                methods > 0,
                "{file}: no method found for route {path}: {args}"
            );
            rest = end;
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Hostile values.

/// Hostile text: percent-encoded for a path or query, JSON-encoded for a JSON string, as is
/// for a raw body. `tag` makes the shell payloads' marker files unique to this run.
fn hostile_strings(tag: &str) -> Vec<String> {
    let pwned = format!("/tmp/pwned-{tag}");
    let mut v: Vec<String> = vec![
        String::new(),
        "\0".into(),
        "a\0b".into(),
        "\0\0\0\0".into(),
        "a".repeat(100_000),
        "\u{1d54f}".repeat(25_000),
        "\u{20ac}".repeat(600),
        format!("; rm -rf {pwned}"),
        format!("$(touch {pwned})"),
        format!("`touch {pwned}`"),
        format!("&& touch {pwned}"),
        format!("\n touch {pwned}\n"),
        "| cat /etc/passwd".into(),
        "--help".into(),
        "-rf".into(),
        "--config=/etc/passwd".into(),
        "-".into(),
        "--".into(),
        "../../../../etc/passwd".into(),
        "..\\..\\..\\windows\\win.ini".into(),
        "/etc/passwd".into(),
        "....//....//etc/passwd".into(),
        "..".into(),
        ".".into(),
        "\u{202e}txt.exe".into(),
        "\u{feff}\u{200b}\u{fffd}\u{10ffff}".into(),
        "\r\n".into(),
        "a\r\nX-Injected: 1\r\nSet-Cookie: pwned=1".into(),
        "\t\x0b\x0c\x7f\x1b[31m".into(),
        "'".into(),
        "\"".into(),
        "' OR '1'='1".into(),
        "\"; DROP TABLE accounts; --".into(),
        "\\".into(),
        "\\u0000".into(),
        "<script>alert(1)</script>".into(),
        "${jndi:ldap://127.0.0.1/a}".into(),
        "{{7*7}}".into(),
        "%s%s%s%n".into(),
        "%00".into(),
        "-1".into(),
        "0".into(),
        "18446744073709551616".into(),
        "9223372036854775808".into(),
        "-9223372036854775809".into(),
        "1e309".into(),
        "NaN".into(),
        "0x10".into(),
        "true".into(),
        "null".into(),
        " padded ".into(),
    ];
    v.dedup();
    v
}

/// Text already in URL form, inserted into a path or query exactly as written.
const RAW_URL_VALUES: &[&str] = &[
    "%00",
    "a%00b",
    "%ED%A0%80",
    "%ed%b0%80x",
    "%FF",
    "%C0%AF",
    "%C0%80",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "../../../../etc/passwd",
    "..;/..;/etc/passwd",
    "%0D%0AX-Injected:%201",
    "%",
    "%zz",
    "%%32%65",
    "+",
    "a+b",
    "%2B",
    "x%26ring%3Dfz",
];

/// JSON values that are not strings, or strings whose escapes Rust text cannot hold.
const RAW_JSON_VALUES: &[&str] = &[
    r#""\ud800""#,
    r#""\udfff""#,
    r#""a\ud800b""#,
    r#""\ud800\u0000""#,
    r#""\uDBFF\uDFFF""#,
    r#""\\u0000""#,
    r#""\u202e""#,
    r#""\u0001\u001f""#,
    "0",
    "-1",
    "-0",
    "1.5",
    "1e309",
    "1E400",
    "18446744073709551616",
    "-9223372036854775809",
    "99999999999999999999999999999999",
    "9223372036854775807",
    "4294967296",
    "true",
    "false",
    "null",
    "{}",
    "[]",
    r#"{"$ne":null}"#,
    r#"[["x"]]"#,
    r#"{"a":{"b":{"c":[1,[2,[3]]]}}}"#,
];

/// Percent-encodes every byte but the unreserved ones (RFC 3986 §2.3).
fn pct(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A value and how to name it in a failure.
#[derive(Debug, Clone)]
struct Value {
    text: String,
    shown: String,
    /// In the smaller set: every place the roleless client reaches, and the unknown `x`.
    core: bool,
}

/// The smaller set of hostile text: one of each kind.
fn is_core(text: &str) -> bool {
    matches!(
        text,
        "" | "\0"
            | "--help"
            | "../../../../etc/passwd"
            | "\""
            | "\\"
            | "18446744073709551616"
            | "-1"
    ) || text.starts_with("$(touch")
        || text.starts_with('\u{202e}')
        || text.starts_with("a\r\nX-Injected")
        || (text.len() == 100_000 && text.starts_with('a'))
}

const CORE_RAW: &[&str] = &[
    "%ED%A0%80",
    "%FF",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%",
    "%0D%0AX-Injected:%201",
    r#""\ud800""#,
    "null",
    "{}",
    "1e309",
    "-1",
    "true",
];

fn shown(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() > 40 {
        let head: String = chars[..24].iter().collect();
        format!("{head:?}… ({} bytes)", text.len())
    } else {
        format!("{text:?}")
    }
}

/// Longest URL text of one value: curl reads a config line of at most 100 KiB, and 100 KB of
/// percent-encoded 4-byte characters would be 300 KB.
const MAX_URL_VALUE: usize = 100_000;

/// [`pct`], cut after the last whole character within [`MAX_URL_VALUE`].
fn pct_capped(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let encoded = pct(c.encode_utf8(&mut [0; 4]));
        if out.len() + encoded.len() > MAX_URL_VALUE {
            break;
        }
        out.push_str(&encoded);
    }
    out
}

fn url_values(strings: &[String]) -> Vec<Value> {
    let mut out: Vec<Value> = strings
        .iter()
        .map(|t| Value {
            text: pct_capped(t),
            shown: shown(t),
            core: is_core(t),
        })
        .collect();
    out.extend(RAW_URL_VALUES.iter().map(|t| Value {
        text: (*t).to_owned(),
        shown: format!("raw {t}"),
        core: CORE_RAW.contains(t),
    }));
    out
}

fn json_values(strings: &[String]) -> Vec<Value> {
    let mut out: Vec<Value> = strings
        .iter()
        .map(|t| Value {
            text: serde_json::to_string(t).unwrap(),
            shown: shown(t),
            core: is_core(t),
        })
        .collect();
    out.extend(RAW_JSON_VALUES.iter().map(|t| Value {
        text: (*t).to_owned(),
        shown: format!("json {t}"),
        core: CORE_RAW.contains(t),
    }));
    // Nested past the edge's depth limit, and a long array.
    out.push(Value {
        text: format!("{}1{}", "[".repeat(40), "]".repeat(40)),
        shown: "json [×40".into(),
        core: true,
    });
    out.push(Value {
        text: format!("[{}1]", "1,".repeat(20_000)),
        shown: "json array of 20,001 numbers".into(),
        core: false,
    });
    out
}

fn raw_values(strings: &[String]) -> Vec<(Vec<u8>, Value)> {
    let mut out: Vec<(Vec<u8>, Value)> = strings
        .iter()
        .map(|t| {
            let v = Value {
                text: String::new(),
                shown: shown(t),
                core: is_core(t),
            };
            (t.clone().into_bytes(), v)
        })
        .collect();
    for (bytes, shown) in [
        (vec![0xed, 0xa0, 0x80], "bytes ED A0 80"),
        (vec![0xff; 64], "bytes FF×64"),
        (vec![0x30, 0x80, 0x00, 0x00], "bytes 30 80 00 00"),
    ] {
        let v = Value {
            text: String::new(),
            shown: shown.into(),
            core: true,
        };
        out.push((bytes, v));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Requests.

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    /// The client holding every role.
    Admin,
    /// The client holding no role.
    Nobody,
    /// No client certificate (public and metrics listeners).
    Anonymous,
}

#[derive(Debug)]
struct Request {
    who: Who,
    method: &'static str,
    url: String,
    /// Content type and body.
    body: Option<(&'static str, Vec<u8>)>,
    /// `METHOD route [where]`, for failures.
    place: String,
    /// The hostile value, as shown in failures.
    value: String,
    /// OCSP answers may be the protocol's own.
    ocsp: bool,
}

impl Request {
    fn who_name(&self) -> &'static str {
        match self.who {
            Who::Admin => "admin",
            Who::Nobody => "roleless",
            Who::Anonymous => "anonymous",
        }
    }
}

struct Context {
    values: HashMap<&'static str, String>,
    api: String,
    public: String,
    metrics: String,
}

impl Context {
    fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("no context value {key}"))
    }

    /// A template value: `{name}` from the context, anything else as is.
    fn fill(&self, text: &str) -> String {
        match text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            Some(key) => self.get(key).to_owned(),
            None => text.to_owned(),
        }
    }
}

/// Replaces every string `"{name}"` in a JSON template by the context value.
fn fill_json(ctx: &Context, v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(t) => *t = ctx.fill(t),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| fill_json(ctx, x)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| fill_json(ctx, x)),
        _ => {}
    }
}

const SLOT: &str = "\u{1}fuzz-slot\u{1}";

/// The base body with the hostile JSON `value` at `pointer` (see [`Row::body_slots`]).
fn json_with(base: &serde_json::Value, pointer: &str, value: &str) -> Option<String> {
    if pointer.is_empty() {
        return Some(value.to_owned());
    }
    let placeholder = serde_json::to_string(SLOT).unwrap();
    let mut body = base.clone();
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let target = body
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{pointer}"));
    if last == "+" {
        // The hostile value names a new member; only strings can.
        if !value.starts_with('"') {
            return None;
        }
        let obj = target.as_object_mut().unwrap();
        obj.insert(SLOT.to_owned(), serde_json::json!(1));
        let text = serde_json::to_string(&body).unwrap();
        return Some(text.replacen(&placeholder, value, 1));
    }
    match target {
        serde_json::Value::Object(o) => {
            o.insert(last.to_owned(), serde_json::Value::String(SLOT.into()));
        }
        serde_json::Value::Array(a) => {
            // An index one past the end appends.
            let i: usize = last.parse().unwrap();
            if i == a.len() {
                a.push(serde_json::Value::Null);
            }
            a[i] = serde_json::Value::String(SLOT.into());
        }
        _ => panic!("{pointer}: not in an object or array"),
    }
    let text = serde_json::to_string(&body).unwrap();
    Some(text.replacen(&placeholder, value, 1))
}

fn parse_query(ctx: &Context, base: &str) -> Vec<(String, String)> {
    base.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), ctx.fill(v))
        })
        .collect()
}

fn join_query(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The route's path with the `i`-th parameter replaced by `hostile` (already URL text).
fn path_with(ctx: &Context, row: &Row, hostile: Option<(usize, &str)>) -> String {
    let mut n = 0;
    let mut out = String::new();
    for (i, segment) in row.route.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        if segment.starts_with('{') {
            match hostile {
                Some((at, v)) if at == n => out.push_str(v),
                _ => out.push_str(&pct(ctx.get(row.args[n]))),
            }
            n += 1;
        } else {
            out.push_str(segment);
        }
    }
    assert_eq!(
        n,
        row.args.len(),
        "{}: base values for its parameters",
        row.route
    );
    out
}

fn build_requests(ctx: &Context, table: &[Row], strings: &[String]) -> Vec<Request> {
    let urls = url_values(strings);
    let jsons = json_values(strings);
    let raws = raw_values(strings);
    let mut out = Vec::new();
    for row in table {
        let who: &[Who] = match row.listener {
            Listener::Api => &[Who::Admin, Who::Nobody],
            Listener::Public | Listener::Metrics => &[Who::Anonymous],
        };
        let base_url = match row.listener {
            Listener::Api => &ctx.api,
            Listener::Public => &ctx.public,
            Listener::Metrics => &ctx.metrics,
        };
        let base_query = parse_query(ctx, row.query);
        let base_json: Option<serde_json::Value> = match row.body {
            BodyKind::Json(t) => {
                let mut v: serde_json::Value =
                    serde_json::from_str(t).unwrap_or_else(|e| panic!("{t}: {e}"));
                fill_json(ctx, &mut v);
                Some(v)
            }
            _ => None,
        };
        let base_body = || -> Option<(&'static str, Vec<u8>)> {
            match row.body {
                BodyKind::None => None,
                BodyKind::Json(_) => Some((
                    "application/json",
                    serde_json::to_vec(base_json.as_ref().unwrap()).unwrap(),
                )),
                BodyKind::Raw(ct, key) => Some((ct, ctx.get(key).as_bytes().to_vec())),
            }
        };
        let url = |path: &str, query: &[(String, String)]| {
            if query.is_empty() {
                format!("{base_url}{path}")
            } else {
                format!("{base_url}{path}?{}", join_query(query))
            }
        };
        let ocsp = row.route.starts_with("/ocsp");
        // (url, body, where, value shown, in the smaller set)
        type Case = (
            String,
            Option<(&'static str, Vec<u8>)>,
            String,
            String,
            bool,
        );
        let mut cases: Vec<Case> = Vec::new();
        if row.fuzz_path {
            for n in 0..row.args.len() {
                for v in &urls {
                    cases.push((
                        url(&path_with(ctx, row, Some((n, &v.text))), &base_query),
                        base_body(),
                        format!("path {}", row.args[n]),
                        v.shown.clone(),
                        v.core,
                    ));
                }
            }
        }
        let path = path_with(ctx, row, None);
        for q in row.query_slots {
            for v in &urls {
                let mut query: Vec<(String, String)> =
                    base_query.iter().filter(|(k, _)| k != q).cloned().collect();
                query.push(((*q).to_owned(), v.text.clone()));
                if *q == "x" && !v.core {
                    // An unknown parameter: one value of each kind is enough.
                    continue;
                }
                cases.push((
                    url(&path, &query),
                    base_body(),
                    format!("query {q}"),
                    v.shown.clone(),
                    v.core,
                ));
            }
        }
        for slot in row.body_slots {
            match row.body {
                BodyKind::Json(_) => {
                    for v in &jsons {
                        if let Some(body) = json_with(base_json.as_ref().unwrap(), slot, &v.text) {
                            cases.push((
                                url(&path, &base_query),
                                Some(("application/json", body.into_bytes())),
                                format!("json {slot:?}"),
                                v.shown.clone(),
                                v.core,
                            ));
                        }
                    }
                }
                BodyKind::Raw(ct, _) => {
                    for (bytes, v) in &raws {
                        cases.push((
                            url(&path, &base_query),
                            Some((ct, bytes.clone())),
                            "body".into(),
                            v.shown.clone(),
                            v.core,
                        ));
                    }
                }
                BodyKind::None => unreachable!("{}: body slots without a body", row.route),
            }
        }
        assert!(
            !cases.is_empty(),
            "{} {}: nothing fuzzed",
            row.method,
            row.route
        );
        for who in who {
            for (url, body, place, value, core) in &cases {
                // The roleless client is refused early everywhere: the smaller set.
                if *who == Who::Nobody && !core {
                    continue;
                }
                out.push(Request {
                    who: *who,
                    method: row.method,
                    url: url.clone(),
                    body: body.clone(),
                    place: format!("{} {} [{place}]", row.method, row.route),
                    value: value.clone(),
                    ocsp,
                });
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sending: many requests per curl process, through a config file (`curl -K`), each request an
// operation of its own (`next`), each answer followed by a marker line with its index.

struct Answer {
    status: u16,
    exit: i32,
    /// `X-Injected` and `Set-Cookie` response headers, which no answer may carry.
    injected: String,
    content_type: String,
    error: String,
    body: Vec<u8>,
}

fn quote(text: &str) -> String {
    assert!(!text.contains(['\n', '\r']), "{text:?}");
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Sends `requests` (indexes `first..`) in one curl process; returns the answers by index.
fn send_chunk(
    dir: &Path,
    tls: &HashMap<Who, Vec<(&'static str, String)>>,
    requests: &[(usize, &Request)],
    marker: &str,
) -> HashMap<usize, Answer> {
    let id = requests[0].0;
    let config_path = dir.join(format!("curl-{id}.conf"));
    let mut config = String::from("silent\nshow-error\n");
    for (i, req) in requests {
        config.push_str(&format!("url = {}\n", quote(&req.url)));
        config.push_str(&format!("request = {}\n", req.method));
        for (opt, value) in &tls[&req.who] {
            config.push_str(&format!("{opt} = {}\n", quote(value)));
        }
        if let Some((ct, body)) = &req.body {
            let file = dir.join(format!("body-{i}"));
            std::fs::write(&file, body).unwrap();
            config.push_str(&format!(
                "header = {}\n",
                quote(&format!("content-type: {ct}"))
            ));
            config.push_str(&format!(
                "data-binary = {}\n",
                quote(&format!("@{}", s(&file)))
            ));
        }
        // curl's HTTP/2 refuses request heads over 64 KiB itself: such targets go over
        // HTTP/1.1, where hyper's own 414 answers them.
        if req.url.len() > 60_000 {
            config.push_str("http1.1\n");
        }
        config.push_str("path-as-is\ngloboff\nmax-time = 30\nconnect-timeout = 10\n");
        config.push_str(&format!(
            "write-out = \"\\n{marker} {i}|%{{http_code}}|%{{exitcode}}|\
             %header{{x-injected}}%header{{set-cookie}}|%{{content_type}}|%{{errormsg}}@@\\n\"\n"
        ));
        config.push_str("next\n");
    }
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new("curl")
        .arg("-K")
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    // Bounded in time: the daemon must answer everything well within this.
    let pid = child.id();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(240);
            while Instant::now() < deadline {
                if done.load(Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            true
        })
    };
    let stdout = {
        use std::io::Read as _;
        let mut buf = Vec::new();
        child.stdout.take().unwrap().read_to_end(&mut buf).unwrap();
        buf
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    let killed = watchdog.join().unwrap();
    assert!(
        !killed,
        "curl for requests {id}.. ran over 240 s: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut answers = HashMap::new();
    let needle = format!("\n{marker} ");
    let needle = needle.as_bytes();
    let mut body_start = 0;
    let mut at = 0;
    while let Some(pos) = find(&stdout[at..], needle) {
        let pos = at + pos;
        let line_start = pos + needle.len();
        let Some(line_len) = find(&stdout[line_start..], b"@@\n") else {
            break;
        };
        let line = String::from_utf8_lossy(&stdout[line_start..line_start + line_len]);
        let fields: Vec<&str> = line.splitn(6, '|').collect();
        let body = stdout[body_start..pos].to_vec();
        if let [index, status, exit, injected, content_type, error] = fields[..] {
            answers.insert(
                index.parse().unwrap(),
                Answer {
                    status: status.parse().unwrap_or(0),
                    exit: exit.parse().unwrap_or(-1),
                    injected: injected.to_owned(),
                    content_type: content_type.to_owned(),
                    error: error.to_owned(),
                    body,
                },
            );
        }
        body_start = line_start + line_len + 3;
        at = body_start;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr: String = stderr.chars().take(300).collect();
    for (i, _) in requests {
        answers.entry(*i).or_insert_with(|| Answer {
            status: 0,
            exit: -1,
            injected: String::new(),
            content_type: String::new(),
            error: format!(
                "curl printed nothing for it; curl exited with {}: {stderr:?}",
                out.status
            ),
            body: Vec::new(),
        });
    }
    let _ = std::fs::remove_file(&config_path);
    for (i, req) in requests {
        if req.body.is_some() {
            let _ = std::fs::remove_file(dir.join(format!("body-{i}")));
        }
    }
    answers
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What is wrong with an answer, if anything.
fn check(req: &Request, answer: Option<&Answer>) -> Option<String> {
    let Some(a) = answer else {
        return Some("no answer at all (curl printed nothing for it)".into());
    };
    let head = || {
        let text = String::from_utf8_lossy(&a.body);
        let text: String = text.chars().take(200).collect();
        format!("{} {:?}: {text:?}", a.status, a.content_type)
    };
    if a.exit != 0 || a.status == 0 {
        return Some(format!(
            "no HTTP answer: curl exit {} ({})",
            a.exit, a.error
        ));
    }
    if !a.injected.is_empty() {
        return Some(format!(
            "a header was injected ({}): {}",
            a.injected,
            head()
        ));
    }
    if a.status >= 500 {
        return Some(format!("server error {}", head()));
    }
    if (200..300).contains(&a.status) {
        if a.content_type.starts_with("application/json")
            && serde_json::from_slice::<serde_json::Value>(&a.body).is_err()
        {
            return Some(format!("a 2xx JSON answer is not JSON: {}", head()));
        }
        return None;
    }
    if req.ocsp && a.content_type == "application/ocsp-response" {
        // The protocol's own malformedRequest (README: HTTP 400, an OCSPResponse).
        if a.status == 400 && a.body.first() == Some(&0x30) {
            return None;
        }
        return Some(format!(
            "an OCSP error answer other than malformedRequest: {}",
            head()
        ));
    }
    if a.content_type != "application/problem+json" {
        return Some(format!(
            "an error answer that is not problem+json: {}",
            head()
        ));
    }
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&a.body) else {
        return Some(format!(
            "a problem+json answer that is not JSON: {}",
            head()
        ));
    };
    if doc["status"] != a.status {
        return Some(format!("the problem's status differs: {}", head()));
    }
    let typed = doc["type"]
        .as_str()
        .is_some_and(|t| t.starts_with("urn:signetd:problem:"));
    let detailed = doc["detail"].as_str().is_some_and(|d| !d.is_empty());
    if !typed || !detailed {
        return Some(format!("a problem without type or detail: {}", head()));
    }
    None
}

fn audit_verify(instance: &Instance) -> (bool, String) {
    let out = instance
        .command()
        .args(["audit", "verify"])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A client made through the API (the CLI wants at least one role): an account with `roles`
/// and an mTLS certificate from an OpenSSL CSR. Returns it and the certificate's serial.
fn api_client(
    instance: &Instance,
    daemon: &Daemon,
    name: &str,
    roles: &[&str],
) -> (Client, String) {
    use support::pki;
    let admin = pki::Client::admin(instance);
    let created = pki::post_json(
        instance,
        daemon,
        &admin,
        "/v1/accounts",
        &serde_json::json!({ "name": name, "roles": roles }),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let dir = instance.dir.path().join("clients");
    let (key, csr) = pki::openssl_csr(&dir, name, name);
    let cert = dir.join(format!("{name}.crt"));
    let serial = pki::issue(instance, daemon, &admin, name, &csr, "mtls-client", &cert);
    (
        Client {
            cert: s(&cert).to_owned(),
            key: s(&key).to_owned(),
        },
        serial,
    )
}

fn tls_options(instance: &Instance, client: &Client) -> Vec<(&'static str, String)> {
    vec![
        ("cacert", s(&instance.ca()).to_owned()),
        ("cert", client.cert.clone()),
        ("key", client.key.clone()),
    ]
}

#[test]
fn hostile_strings_in_every_parameter_of_every_endpoint() {
    let started = Instant::now();

    // Every route in the routers' source is in the table, and nothing else is.
    let table = route_table();
    let in_source = routes_in_source();
    let in_table: BTreeSet<(Listener, String, String)> = table
        .iter()
        .map(|r| (r.listener, r.method.to_owned(), r.route.to_owned()))
        .collect();
    let uncovered: Vec<_> = in_source.difference(&in_table).collect();
    assert!(
        uncovered.is_empty(),
        "routes without fuzz coverage (add them to route_table in tests/hostile_fuzz.rs): \
         {uncovered:?}"
    );
    let stale: Vec<_> = in_table.difference(&in_source).collect();
    assert!(
        stale.is_empty(),
        "routes in the table but not in the router: {stale:?}"
    );
    assert!(
        in_source.len() >= 40,
        "only {} routes found: {in_source:?}",
        in_source.len()
    );

    let instance = Instance::new();
    instance.init();
    let keys = generate(&instance, "fz", "ec-p256", 2);
    let admin = account(&instance, "root", "admin,auditor,records,signer:fz");
    let signer = account(&instance, "signer", "signer:fz");
    let mut daemon = instance.serve();
    let (nobody, _) = api_client(&instance, &daemon, "nobody", &[]);
    let (_, victim_serial) = api_client(&instance, &daemon, "victim", &["signer:fz"]);
    let keyid = support::sign::get(&instance, &daemon, &admin, &format!("/v1/keys/{}", keys[0]))
        .json()["openpgp_key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let form = |field: &str| {
        format!(
            "--FuzzBoundary\r\nContent-Disposition: form-data; name=\"{field}\"; \
             filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--FuzzBoundary--\r\n"
        )
    };
    let dir = instance.dir.path().join("fuzz");
    std::fs::create_dir_all(&dir).unwrap();
    let (_, csr) = support::pki::openssl_csr(&dir, "fuzz", "fuzz");
    let csr_pem = std::fs::read_to_string(&csr).unwrap();
    let tag = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let ctx = Context {
        values: HashMap::from([
            ("ring", "fz".to_owned()),
            ("key", keys[0].clone()),
            ("key2", keys[1].clone()),
            ("account", "victim".to_owned()),
            ("serial", victim_serial),
            ("record", "1".to_owned()),
            ("job", uuid_like(&tag)),
            ("csr", csr_pem),
            ("data", "hello".to_owned()),
            ("keyid", keyid),
            ("form", form("file")),
            ("batch_form", form("files")),
            // SHA-256 of "hello", base64.
            (
                "digest",
                "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=".to_owned(),
            ),
            ("ocsp_der", "0".to_owned()),
            ("ocsp_get", "MAA=".to_owned()),
        ]),
        api: format!("https://localhost:{}", daemon.addrs.api.port()),
        public: format!("http://{}", daemon.addrs.public),
        metrics: format!("http://{}", daemon.addrs.metrics),
    };
    let strings = hostile_strings(&tag);
    let requests = build_requests(&ctx, &table, &strings);
    let total = requests.len();
    assert!(total >= 2000, "only {total} requests");

    let tls = HashMap::from([
        (Who::Admin, tls_options(&instance, &admin)),
        (Who::Nobody, tls_options(&instance, &nobody)),
        (Who::Anonymous, Vec::new()),
    ]);
    // Chunks of one client each, sent by a few curl processes at once.
    let mut chunks: Vec<Vec<(usize, &Request)>> = Vec::new();
    for who in [Who::Admin, Who::Nobody, Who::Anonymous] {
        let mine: Vec<(usize, &Request)> = requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.who == who)
            .collect();
        for c in mine.chunks(150) {
            chunks.push(c.to_vec());
        }
    }
    let marker = format!("@@FUZZ-{tag}@@");
    let next = AtomicUsize::new(0);
    let answers: Mutex<HashMap<usize, Answer>> = Mutex::new(HashMap::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(chunk) = chunks.get(i) else { break };
                    let got = send_chunk(&dir, &tls, chunk, &marker);
                    answers.lock().unwrap().extend(got);
                }
            });
        }
    });
    let answers = answers.into_inner().unwrap();
    let sent_in = started.elapsed();

    // Failures grouped by place and kind, a few examples each.
    let mut failures: std::collections::BTreeMap<(String, String), Vec<String>> =
        Default::default();
    let mut failed = 0;
    let mut statuses: std::collections::BTreeMap<u16, usize> = Default::default();
    for (i, req) in requests.iter().enumerate() {
        let answer = answers.get(&i);
        if let Some(a) = answer {
            *statuses.entry(a.status).or_default() += 1;
        }
        if let Some(why) = check(req, answer) {
            failed += 1;
            let kind = why.split(':').next().unwrap_or_default().to_owned();
            failures
                .entry((req.place.clone(), kind))
                .or_default()
                .push(format!("{} = {}: {why}", req.who_name(), req.value));
        }
    }
    println!(
        "{total} hostile requests ({} routes, {} rows, {} strings) in {:.1} s; statuses {statuses:?}",
        in_source.len(),
        table.len(),
        strings.len(),
        sent_in.as_secs_f64()
    );
    if failed > 0 {
        let mut report = String::new();
        for ((place, kind), lines) in failures.iter().take(80) {
            report.push_str(&format!("\n{place} — {kind} ({}×)\n", lines.len()));
            for l in lines.iter().take(3) {
                report.push_str(&format!("    {l}\n"));
            }
        }
        panic!(
            "{failed} of {total} hostile requests failed, in {} places:{report}\ndaemon log (end):\n{}",
            failures.len(),
            tail(&daemon.logs(), 10)
        );
    }

    // The daemon is still up and still signs.
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon exited: {}",
        tail(&daemon.logs(), 60)
    );
    let data = write(instance.dir.path(), "still-signs", b"still here");
    let signed = sign_file(&instance, &daemon, &signer, "ring=fz", &data);
    assert_eq!(signed.status, 200, "{signed:?}");
    assert!(signed.json()["signature"].is_string(), "{signed:?}");
    let health = support::curl(&[&daemon.public_url("/readyz")]);
    assert_eq!(health.status, 200, "{health:?}");
    let logs = daemon.logs();
    assert!(
        !logs.contains("panicked"),
        "the daemon panicked: {}",
        tail(&logs, 60)
    );

    // None of the shell text ran anywhere.
    let pwned: Vec<String> = std::fs::read_dir("/tmp")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("pwned-{tag}")))
        .collect();
    assert!(pwned.is_empty(), "shell text ran: /tmp/{pwned:?}");

    // And the log of all of it verifies.
    let (ok, report) = audit_verify(&instance);
    assert!(ok, "audit verify failed: {report}");
    assert_eq!(
        daemon.terminate().code(),
        Some(0),
        "{}",
        tail(&daemon.logs(), 40)
    );
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
}

/// A UUID no job has: hex of the tag's hash.
fn uuid_like(tag: &str) -> String {
    use sha2::Digest as _;
    let h = hex::encode(sha2::Sha256::digest(tag.as_bytes()));
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The OpenAPI document (`/openapi.json`) describes every route of the routers' source, each
/// under the tag of the listener that serves it, and nothing the routers do not serve (but
/// the document and its page, which utoipa-swagger-ui's router adds).
#[test]
fn the_openapi_document_covers_every_route() {
    let doc = serde_json::to_value(signetd::api::openapi::document()).unwrap();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let listener = match op["tags"][0].as_str() {
                Some("api") => Listener::Api,
                Some("public") => Listener::Public,
                Some("metrics") => Listener::Metrics,
                other => panic!("{method} {path}: no listener tag ({other:?})"),
            };
            documented.insert((listener, method.to_uppercase(), path.clone()));
        }
    }
    let routed: BTreeSet<_> = routes_in_source()
        .into_iter()
        // axum's catch-all `{*request}` is an ordinary path parameter in OpenAPI.
        .map(|(l, m, p)| (l, m, p.replace("{*", "{")))
        .collect();
    let missing: Vec<_> = routed.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:?}"
    );
    let extra: Vec<_> = documented
        .difference(&routed)
        .filter(|(_, _, p)| p != "/openapi.json" && p != "/docs/")
        .collect();
    assert!(extra.is_empty(), "documented but not routed: {extra:?}");
}
