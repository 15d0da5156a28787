//! api::upload: the data a signing request carries, streamed — either the request body itself
//! or the file parts of a `multipart/form-data` body (a `file` part, or several `files` parts
//! for batches, as curl `-F` and Python `requests` send them). Each chunk goes to the caller's
//! sink as it arrives; nothing is buffered here, so memory does not grow with the upload.
//!
//! Limits: a declared Content-Length over the limit (plus room for the multipart framing) is
//! refused before anything is read (413), as is a stream that crosses it; each file part is
//! held to the limit too. Other form fields are read and dropped (at most 64 KiB each), as
//! albs-sign-file ignores them. A file name must be UTF-8 without control characters (400);
//! it is never used as a path.

use std::pin::Pin;

use axum::body::{Body, HttpBody as _};
use axum::http::{HeaderMap, StatusCode, header};

use super::ApiError;

/// Room for multipart boundaries and part headers on top of the data limit.
const FRAMING: u64 = 1024 * 1024;
/// The most a form field that is not a file may hold.
const MAX_FIELD: u64 = 64 * 1024;
/// The longest file name kept.
const MAX_FILE_NAME: usize = 1024;

/// How the request carries its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Shape {
    /// The body is the data.
    Raw,
    /// A multipart form with this boundary.
    Multipart(String),
}

/// The shape of a request's body, from its Content-Type. A `multipart/form-data` type without
/// a boundary is refused.
pub(super) fn shape(headers: &HeaderMap) -> Result<Shape, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Shape::Raw);
    };
    let ct = ct
        .to_str()
        .map_err(|_| ApiError::bad_request("the Content-Type is not ASCII"))?;
    let mime: mime::Mime = match ct.parse() {
        Ok(m) => m,
        // Raw uploads may carry any type; only a form needs parsing.
        Err(_)
            if !ct
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/") =>
        {
            return Ok(Shape::Raw);
        }
        Err(_) => {
            return Err(ApiError::bad_request(
                "the multipart Content-Type is malformed",
            ));
        }
    };
    if mime.type_() != mime::MULTIPART {
        return Ok(Shape::Raw);
    }
    if mime.subtype() != mime::FORM_DATA {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            "multipart bodies must be multipart/form-data",
        ));
    }
    let boundary = multer::parse_boundary(ct)
        .map_err(|_| ApiError::bad_request("the multipart/form-data type has no boundary"))?;
    Ok(Shape::Multipart(boundary))
}

/// One file of an upload, as the sink sees it begin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileStart {
    /// Its index among the files (0 for a raw body).
    pub index: usize,
    /// The file name the client gave (multipart only; checked, not a path).
    pub name: Option<String>,
}

/// What an upload was: how many files and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Streamed {
    /// Files (1 for a raw body).
    pub files: usize,
    /// Data bytes over all files.
    pub bytes: u64,
}

/// The events a sink receives, in order: `Start` of a file, its `Data`, then the next file.
pub(super) enum Event<'a> {
    /// A file begins.
    Start(FileStart),
    /// The next chunk of the current file.
    Data(&'a [u8]),
    /// A whole form field the caller asked to keep ([`stream_keeping`]), at most 1 MiB.
    Field(&'a str, &'a [u8]),
}

fn too_large(limit: u64, what: &str) -> ApiError {
    ApiError::too_large(format!("{what} is limited to {limit} bytes"))
}

/// Refuses a declared Content-Length that cannot fit.
pub(super) fn check_declared(
    headers: &HeaderMap,
    shape: &Shape,
    limit: u64,
    what: &str,
) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let room = match shape {
        Shape::Raw => limit,
        Shape::Multipart(_) => limit.saturating_add(FRAMING),
    };
    match declared {
        Some(n) if n > room => Err(too_large(limit, what)),
        _ => Ok(()),
    }
}

/// Streams the upload's files to `sink`: the whole body for [`Shape::Raw`], else every part
/// named `field` (in order; at most `max_files`). `limit` bounds each file and all of them
/// together. The sink may refuse (its error ends the upload). Returns what was read (a form
/// may hold no `field` part: the caller decides).
pub(super) async fn stream(
    body: Body,
    shape: &Shape,
    field: &str,
    max_files: usize,
    limit: u64,
    what: &str,
    sink: impl FnMut(Event<'_>) -> Result<(), ApiError>,
) -> Result<Streamed, ApiError> {
    stream_keeping(body, shape, field, &[], max_files, limit, what, sink).await
}

/// The most a kept field ([`stream_keeping`]) may hold.
const MAX_KEPT_FIELD: u64 = 1024 * 1024;

/// [`stream`], also handing the sink each form field named in `keep` whole, as an
/// [`Event::Field`] (at most 1 MiB each), where it stands among the parts.
#[allow(clippy::too_many_arguments)]
pub(super) async fn stream_keeping(
    body: Body,
    shape: &Shape,
    field: &str,
    keep: &[&str],
    max_files: usize,
    limit: u64,
    what: &str,
    mut sink: impl FnMut(Event<'_>) -> Result<(), ApiError>,
) -> Result<Streamed, ApiError> {
    match shape {
        Shape::Raw => {
            sink(Event::Start(FileStart {
                index: 0,
                name: None,
            }))?;
            let mut body = body;
            let mut total: u64 = 0;
            loop {
                let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
                let Some(frame) = frame else {
                    return Ok(Streamed {
                        files: 1,
                        bytes: total,
                    });
                };
                let frame = frame.map_err(|e| {
                    tracing::debug!(error = %e, "request body read failed");
                    ApiError::bad_request("the request body could not be read")
                })?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                total = total.saturating_add(data.len() as u64);
                if total > limit {
                    return Err(too_large(limit, what));
                }
                sink(Event::Data(&data))?;
            }
        }
        Shape::Multipart(boundary) => {
            let constraints = multer::Constraints::new().size_limit(
                multer::SizeLimit::new()
                    .whole_stream(limit.saturating_add(FRAMING))
                    .per_field(limit),
            );
            let mut form =
                multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
            let mut files = 0usize;
            let mut total: u64 = 0;
            loop {
                let part = form
                    .next_field()
                    .await
                    .map_err(|e| form_error(&e, limit, what))?;
                let Some(mut part) = part else { break };
                if let Some(name) = part.name().filter(|n| keep.contains(n)).map(str::to_owned) {
                    let mut value = Vec::new();
                    while let Some(chunk) = part
                        .chunk()
                        .await
                        .map_err(|e| form_error(&e, limit, what))?
                    {
                        if (value.len() + chunk.len()) as u64 > MAX_KEPT_FIELD {
                            return Err(ApiError::too_large(format!(
                                "the form field `{name}` is limited to {MAX_KEPT_FIELD} bytes"
                            )));
                        }
                        value.extend_from_slice(&chunk);
                    }
                    sink(Event::Field(&name, &value))?;
                    continue;
                }
                if part.name() != Some(field) {
                    // Other fields are read and dropped, within bounds.
                    let mut seen: u64 = 0;
                    while let Some(chunk) = part
                        .chunk()
                        .await
                        .map_err(|e| form_error(&e, limit, what))?
                    {
                        seen = seen.saturating_add(chunk.len() as u64);
                        if seen > MAX_FIELD {
                            return Err(ApiError::bad_request(format!(
                                "a form field other than `{field}` is limited to {MAX_FIELD} bytes"
                            )));
                        }
                    }
                    continue;
                }
                if files == max_files {
                    return Err(ApiError::bad_request(if max_files == 1 {
                        format!("send one `{field}` part")
                    } else {
                        format!("at most {max_files} `{field}` parts")
                    }));
                }
                let name = part.file_name().map(check_file_name).transpose()?;
                sink(Event::Start(FileStart { index: files, name }))?;
                files += 1;
                let mut this: u64 = 0;
                while let Some(chunk) = part
                    .chunk()
                    .await
                    .map_err(|e| form_error(&e, limit, what))?
                {
                    this = this.saturating_add(chunk.len() as u64);
                    total = total.saturating_add(chunk.len() as u64);
                    if this > limit || total > limit {
                        return Err(too_large(limit, what));
                    }
                    sink(Event::Data(&chunk))?;
                }
            }
            Ok(Streamed {
                files,
                bytes: total,
            })
        }
    }
}

fn form_error(e: &multer::Error, limit: u64, what: &str) -> ApiError {
    match e {
        multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
            too_large(limit, what)
        }
        multer::Error::StreamReadFailed(_) => {
            tracing::debug!(error = %e, "multipart body read failed");
            ApiError::bad_request("the request body could not be read")
        }
        _ => ApiError::bad_request(format!("malformed multipart/form-data: {e}")),
    }
}

/// A client's file name: UTF-8 (multer checked), no control characters, bounded.
fn check_file_name(name: &str) -> Result<String, ApiError> {
    if name.len() > MAX_FILE_NAME {
        return Err(ApiError::bad_request(format!(
            "a file name is limited to {MAX_FILE_NAME} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "a file name must not contain control characters",
        ));
    }
    Ok(name.to_owned())
}

/// The last path component of a client's file name, with every character outside
/// `A-Za-z0-9._+-` replaced by `_`: safe in a Content-Disposition header and as a file name
/// (never `.` or `..`). `fallback` when nothing is left.
pub(super) fn basename(name: Option<&str>, fallback: &str) -> String {
    let last = name
        .unwrap_or_default()
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default();
    let safe: String = last
        .chars()
        .take(255)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.chars().all(|c| c == '.') {
        fallback.to_owned()
    } else {
        safe
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn basenames() {
        assert_eq!(
            basename(Some("../../../etc/cron.d/payload.rpm"), "x"),
            "payload.rpm"
        );
        assert_eq!(basename(Some("a\\b\\c d.rpm"), "x"), "c_d.rpm");
        assert_eq!(basename(Some(".."), "x"), "x");
        assert_eq!(basename(Some("dir/"), "x"), "x");
        assert_eq!(basename(None, "package.rpm"), "package.rpm");
        assert_eq!(basename(Some("ü\"x.rpm"), "p"), "__x.rpm");
    }

    #[test]
    fn shapes() {
        let mut h = HeaderMap::new();
        assert_eq!(shape(&h).ok(), Some(Shape::Raw));
        h.insert(
            header::CONTENT_TYPE,
            "multipart/form-data; boundary=abc".parse().unwrap(),
        );
        assert_eq!(shape(&h).ok(), Some(Shape::Multipart("abc".into())));
        h.insert(header::CONTENT_TYPE, "multipart/form-data".parse().unwrap());
        assert_eq!(shape(&h).err().map(|e| e.status().as_u16()), Some(400));
        h.insert(
            header::CONTENT_TYPE,
            "multipart/mixed; boundary=a".parse().unwrap(),
        );
        assert_eq!(shape(&h).err().map(|e| e.status().as_u16()), Some(415));
        h.insert(
            header::CONTENT_TYPE,
            "application/octet-stream".parse().unwrap(),
        );
        assert_eq!(shape(&h).ok(), Some(Shape::Raw));
    }
}
