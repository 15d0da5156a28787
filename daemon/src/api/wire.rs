//! api::wire: problem+json for the requests hyper refuses before there is a request at all.
//!
//! An HTTP/1 request whose head cannot be parsed — a raw space or quote in the target, a target
//! over 65,534 bytes, a head larger than the read buffer, a malformed header — is answered by
//! hyper itself with `400`, `414` or `431`, an empty body and `connection: close`, and no
//! service ever sees it. hyper offers no hook for that answer (hyperium/hyper#3911 proposes
//! one), so [`ProblemOnParseError`] sits between hyper and the connection and rewrites exactly
//! those answers into problem+json on their way out. It recognises them by their shape, which no
//! answer of the daemon's own has: a 4xx status line followed only by `connection: close`,
//! `content-length: 0` and `date`, ending where the write ends. The connection closes after
//! such an answer, so nothing follows it.
//!
//! HTTP/2 needs none of this: a request whose `:path` is not a URI is malformed by RFC 9113
//! §8.1.1 and reset as the RFC demands, and header blocks up to the limit set in `server.rs`
//! reach [`super::input::check_request`] and its problem+json answers.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::StatusCode;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ApiError;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing read yet.
    Unknown,
    /// HTTP/1: watch for hyper's automatic answers.
    Http1,
    /// HTTP/2, or an answer already rewritten: pass everything through.
    Through,
}

/// A connection whose HTTP/1 parse-error answers are rewritten into problem+json.
pub struct ProblemOnParseError<S> {
    inner: S,
    mode: Mode,
    /// The rewritten answer, how much of it is written, and how many of hyper's bytes it
    /// stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
    counter: IntCounter,
}

impl<S> std::fmt::Debug for ProblemOnParseError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProblemOnParseError")
            .field("mode", &self.mode)
            .field("pending", &self.pending.as_ref().map(|p| p.0.len()))
            .finish_non_exhaustive()
    }
}

impl<S> ProblemOnParseError<S> {
    /// Wraps a connection; `counter` counts the rewritten answers.
    pub fn new(inner: S, counter: IntCounter) -> Self {
        ProblemOnParseError {
            inner,
            mode: Mode::Unknown,
            pending: None,
            counter,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ProblemOnParseError<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.mode == Mode::Unknown {
            let read = &buf.filled()[before..];
            if !read.is_empty() {
                let n = read.len().min(H2_PREFACE.len());
                self.mode = if read[..n] == H2_PREFACE[..n] {
                    // A prefix of the preface: HTTP/2 (hyper's own detection decides the same).
                    Mode::Through
                } else {
                    Mode::Http1
                };
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ProblemOnParseError<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.mode == Mode::Http1
            && this.pending.is_none()
            && let Some(status) = parse_error_answer(buf)
        {
            this.pending = Some((problem_answer(buf, status), 0, buf.len()));
            this.counter.inc();
        }
        let Some((bytes, written, stands_for)) = &mut this.pending else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        while *written < bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // hyper offers the same bytes again after `Pending`; they are accounted for now.
        let n = (*stands_for).min(buf.len());
        this.pending = None;
        this.mode = Mode::Through;
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.mode == Mode::Http1 || self.pending.is_some() {
            let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
            if let (Some(only), None) = (non_empty.next(), non_empty.next())
                && (self.pending.is_some() || parse_error_answer(only).is_some())
            {
                return self.poll_write(cx, only);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The status of `buf` if it is exactly one of hyper's automatic parse-error answers.
fn parse_error_answer(buf: &[u8]) -> Option<StatusCode> {
    let head = buf.strip_suffix(b"\r\n\r\n")?;
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let rest = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))?;
    let status = match rest.get(..4)? {
        "400 " => StatusCode::BAD_REQUEST,
        "414 " => StatusCode::URI_TOO_LONG,
        "431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let (mut close, mut empty) = (false, false);
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        match (name.to_ascii_lowercase().as_str(), value) {
            ("connection", "close") => close = true,
            ("content-length", "0") => empty = true,
            ("date", _) => {}
            _ => return None,
        }
    }
    (close && empty).then_some(status)
}

/// The problem+json answer that replaces hyper's `original` answer with `status`.
fn problem_answer(original: &[u8], status: StatusCode) -> Vec<u8> {
    let (kind, title, detail) = match status {
        StatusCode::URI_TOO_LONG => (
            "uri-too-long",
            "URI too long",
            "the request target is longer than an HTTP/1 request may have here (65,534 bytes)",
        ),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            "headers-too-large",
            "Request header fields too large",
            "the request head is larger than this server reads",
        ),
        _ => (
            "bad-request",
            "Bad request",
            "the request is not valid HTTP/1.1: a request target must not hold spaces, quotes or \
             other characters that need percent-encoding, and every header must be well formed",
        ),
    };
    let body = ApiError::new(status, kind, title, detail).json_body();
    let date = std::str::from_utf8(original)
        .ok()
        .and_then(|t| {
            t.split("\r\n")
                .find(|l| l.to_ascii_lowercase().starts_with("date: "))
        })
        .map(|l| format!("{l}\r\n"))
        .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n\
         connection: close\r\n{date}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn recognises_only_hypers_automatic_answers() {
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n\
                          date: Sat, 05 Dec 2026 16:10:47 GMT\r\n\r\n";
        assert_eq!(
            parse_error_answer(hyper_414),
            Some(StatusCode::URI_TOO_LONG)
        );
        let hyper_400 =
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(parse_error_answer(hyper_400), Some(StatusCode::BAD_REQUEST));
        for ours in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\n\r\n{}"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n",
            b"\x00\x00\x04\x08\x00\x00\x00\x00\x00",
        ] {
            assert_eq!(parse_error_answer(ours), None, "{}", String::from_utf8_lossy(ours));
        }
        let rewritten = problem_answer(hyper_414, StatusCode::URI_TOO_LONG);
        let text = String::from_utf8(rewritten).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(
            head.contains("date: Sat, 05 Dec 2026 16:10:47 GMT"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["status"], 414);
    }
}
