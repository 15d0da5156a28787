//! api::input: the edge where untrusted request text becomes something the rest of the daemon
//! may hold. Every request's URI and headers pass [`check_request`] before any handler sees
//! them, and every JSON body is parsed by [`parse_json`]: text PostgreSQL cannot store (U+0000)
//! or that is not text at all (bytes that decode to invalid UTF-8, a lone surrogate) is refused
//! here with a 400, so it never reaches a query, a log line or the audit writer.
//!
//! Why here and not in each handler: a NUL byte in a ring name once made the audit writer's
//! whole group commit fail (PostgreSQL `text` cannot hold it), taking every concurrent request
//! down with it. One check at the edge covers every parameter of every endpoint, including
//! ones added later.

use axum::http::{HeaderMap, StatusCode, Uri};

use super::ApiError;

/// Longest request target (path and query) accepted; longer is 414. Far above any URI this
/// API builds (the longest are an OCSP GET and a key id), far below hyper's own limit of
/// 65,534 bytes for HTTP/1.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names and values) accepted in one request; more is 431. hyper's HTTP/2
/// limit is raised above this (see `server.rs`) so that such requests reach this check and get
/// a problem+json answer instead of a stream reset.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Deepest nesting of arrays and objects accepted in a JSON body. The API's own bodies nest
/// three levels at most; serde_json would stop at 128, this gives a clearer answer sooner.
pub const MAX_JSON_DEPTH: usize = 32;

/// Why a request was refused at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The request target is longer than [`MAX_URI_BYTES`].
    #[error("the request target is {0} bytes long; at most {MAX_URI_BYTES} are accepted")]
    UriTooLong(usize),
    /// The headers are larger than [`MAX_HEADER_BYTES`].
    #[error("the request headers hold {0} bytes; at most {MAX_HEADER_BYTES} are accepted")]
    HeadersTooLarge(usize),
    /// A percent-decoded path segment or query component is not UTF-8.
    #[error("the {0} is not valid UTF-8 once percent-decoded")]
    NotUtf8(&'static str),
    /// Text holds a character that no name or parameter may hold.
    #[error("the {0} holds a control character (such as U+0000), which no parameter may hold")]
    Control(&'static str),
    /// A JSON body nests deeper than [`MAX_JSON_DEPTH`].
    #[error("the JSON body nests deeper than {MAX_JSON_DEPTH} levels")]
    TooDeep,
    /// A JSON string holds U+0000.
    #[error("a JSON string holds U+0000, which no field may hold")]
    JsonNul,
}

impl InputError {
    /// The problem answer for this refusal.
    pub fn to_api(&self) -> ApiError {
        match self {
            InputError::UriTooLong(_) => ApiError::new(
                StatusCode::URI_TOO_LONG,
                "uri-too-long",
                "URI too long",
                self.to_string(),
            ),
            InputError::HeadersTooLarge(_) => ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request header fields too large",
                self.to_string(),
            ),
            _ => ApiError::bad_request(self.to_string()),
        }
    }
}

/// Checks what every request carries before routing's extractors decode it: the target's and
/// the headers' sizes, and that every path segment and query component decodes to text with
/// no control characters.
pub fn check_request(uri: &Uri, headers: &HeaderMap) -> Result<(), InputError> {
    let target = uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Err(InputError::UriTooLong(target));
    }
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.as_bytes().len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(InputError::HeadersTooLarge(header_bytes));
    }
    for segment in uri.path().split('/') {
        check_decoded(segment.as_bytes(), "path")?;
    }
    if let Some(query) = uri.query() {
        for pair in query.split('&') {
            // `application/x-www-form-urlencoded`, as axum's `Query` decodes it.
            check_decoded(pair.as_bytes(), "query")?;
        }
    }
    Ok(())
}

/// Percent-decodes `raw` and checks the result is text that any parameter may hold. (`+` in a
/// query decodes to a space, which is allowed, so it needs no special case.)
fn check_decoded(raw: &[u8], what: &'static str) -> Result<(), InputError> {
    let decoded: std::borrow::Cow<'_, [u8]> = percent_encoding::percent_decode(raw).into();
    let text = std::str::from_utf8(&decoded).map_err(|_| InputError::NotUtf8(what))?;
    check_text(text, what)
}

/// Refuses C0 control characters and DEL in a name or parameter.
pub fn check_text(text: &str, what: &'static str) -> Result<(), InputError> {
    if text.chars().any(|c| c.is_ascii_control()) {
        return Err(InputError::Control(what));
    }
    Ok(())
}

/// Whether NUL may appear in the strings of a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nul {
    /// Every string becomes a name, a parameter or a text column: refused.
    Refused,
    /// The strings are data stored as bytes (record `text`): allowed.
    Allowed,
}

/// Parses a JSON body after checking its nesting depth and (unless allowed) that no string
/// holds U+0000. serde_json itself refuses lone surrogates and invalid UTF-8.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], nul: Nul) -> Result<T, ApiError> {
    scan_json(bytes, nul).map_err(|e| e.to_api())?;
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("bad JSON: {e}")))
}

/// One pass over the raw bytes: the depth of arrays and objects outside strings, and `\u0000`
/// escapes inside them (a raw NUL byte is not valid JSON; serde_json refuses it). Syntax is
/// serde_json's business; this only has to be right for valid JSON and never panic.
fn scan_json(bytes: &[u8], nul: Nul) -> Result<(), InputError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if in_string {
            match b {
                b'"' => in_string = false,
                b'\\' => {
                    if nul == Nul::Refused
                        && bytes.get(i + 1) == Some(&b'u')
                        && bytes
                            .get(i + 2..i + 6)
                            .is_some_and(|h| h.iter().all(|&c| c == b'0'))
                    {
                        return Err(InputError::JsonNul);
                    }
                    // Skip the escaped character (a quote or backslash must not end or start
                    // anything).
                    i += 1;
                }
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_JSON_DEPTH {
                        return Err(InputError::TooDeep);
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn check(target: &str) -> Result<(), InputError> {
        check_request(&target.parse::<Uri>().unwrap(), &HeaderMap::new())
    }

    #[test]
    fn uris() {
        let cases: &[(&str, Result<(), InputError>)] = &[
            ("/v1/sign?ring=prod&hash=sha256", Ok(())),
            ("/v1/rings/r%C3%A9", Ok(())),
            ("/v1/sign?ring=a+b", Ok(())),
            ("/v1/sign?ring=%00", Err(InputError::Control("query"))),
            ("/v1/rings/%00", Err(InputError::Control("path"))),
            ("/v1/accounts/a%00b", Err(InputError::Control("path"))),
            ("/v1/rings/a%0Ab", Err(InputError::Control("path"))),
            ("/v1/rings/a%7Fb", Err(InputError::Control("path"))),
            ("/v1/rings/%ED%A0%80", Err(InputError::NotUtf8("path"))),
            ("/v1/keys?ring=%ED%A0%80", Err(InputError::NotUtf8("query"))),
            ("/v1/keys?ring=%FF", Err(InputError::NotUtf8("query"))),
            // A stray `%` is left as is by decoders, as by axum's.
            ("/v1/rings/100%", Ok(())),
        ];
        for (target, expected) in cases {
            assert_eq!(&check(target), expected, "{target}");
        }
        let long = format!("/v1/sign?ring={}", "a".repeat(MAX_URI_BYTES));
        assert!(matches!(check(&long), Err(InputError::UriTooLong(_))));
        assert_eq!(
            InputError::UriTooLong(1).to_api().status(),
            StatusCode::URI_TOO_LONG
        );
    }

    #[test]
    fn headers() {
        let mut headers = HeaderMap::new();
        headers.insert("x-big", "a".repeat(MAX_HEADER_BYTES).parse().unwrap());
        let uri: Uri = "/v1/whoami".parse().unwrap();
        let e = check_request(&uri, &headers).unwrap_err();
        assert!(matches!(e, InputError::HeadersTooLarge(_)));
        assert_eq!(
            e.to_api().status(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
    }

    #[test]
    fn json() {
        let ok = |s: &str| scan_json(s.as_bytes(), Nul::Refused);
        assert_eq!(ok(r#"{"ring":"prod","items":[{"a":[1,2]}]}"#), Ok(()));
        assert_eq!(ok(r#"{"ring":"\u0000"}"#), Err(InputError::JsonNul));
        assert_eq!(ok(r#"{"\u0000":1}"#), Err(InputError::JsonNul));
        // An escaped backslash followed by text that looks like an escape is text.
        assert_eq!(ok(r#"{"ring":"\\u0000"}"#), Ok(()));
        assert_eq!(ok(r#"{"ring":"\u0001"}"#), Ok(()));
        // Brackets inside strings do not nest.
        assert_eq!(ok(&format!(r#"{{"a":"{}"}}"#, "[".repeat(1000))), Ok(()));
        assert_eq!(ok(&"[".repeat(MAX_JSON_DEPTH)), Ok(()));
        assert_eq!(
            ok(&"[".repeat(MAX_JSON_DEPTH + 1)),
            Err(InputError::TooDeep)
        );
        assert_eq!(scan_json(br#"{"text":"\u0000"}"#, Nul::Allowed), Ok(()));
        // Truncated input never panics.
        for s in [r#"""#, r#""\"#, r#""\u00"#, "[", "]]]"] {
            let _ = ok(s);
        }
        let e = parse_json::<serde_json::Value>(br#"{"a":"\ud800"}"#, Nul::Refused).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let deep = "[".repeat(100_000);
        let e = parse_json::<serde_json::Value>(deep.as_bytes(), Nul::Refused).unwrap_err();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
    }
}
