//! api::body: request bodies that are read to their end after an early answer, so the answer
//! reaches the client.
//!
//! A refusal often goes out before the upload it refuses has been read (413 by declared
//! length, 403 for a missing role, 404 for an unknown ring). If the unread body is then simply
//! dropped, the answer can be lost on the way: over HTTP/2 the stream is reset at once, and
//! some clients (curl 7.88 among them) report a stream error instead of the answer they were
//! sent; over HTTP/1.1 the connection is closed with unread data in the kernel's receive
//! buffer, which makes the kernel send a TCP reset that can destroy the answer in flight.
//! Servers solve this with a "lingering close"; this is the same for both protocols: every
//! request body is wrapped in [`Drained`], and when a handler (or one of axum's extractors)
//! drops it unfinished, a task reads and discards the rest, bounded in time and bytes, while
//! the answer goes out. Nothing is buffered, so memory does not grow with the upload.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// Longest time the rest of a refused body is read for. A client that honours the early answer
/// stops sending long before (curl: "HTTP error before end of send, stop sending").
pub const DRAIN_TIME: Duration = Duration::from_secs(5);
/// Most bytes read and discarded after an answer; past that the stream is reset (HTTP/2) or
/// the connection closed (HTTP/1.1) even if the client is still sending.
pub const DRAIN_BYTES: u64 = 256 * 1024 * 1024;

/// A request body that, dropped before its end, has the rest read and discarded in the
/// background (see the module documentation).
pub struct Drained {
    inner: Option<Body>,
    done: bool,
    /// Dropped once the body has been read to its end or given up on (see [`Drained::watched`]).
    finished: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drained {
    /// Wraps a request body; returns it with a receiver that resolves (with an error, as its sender is
    /// dropped) once the body has been read to its end, by the handler or by the background
    /// drain, or the drain gave up.
    pub fn watched(inner: Body) -> (Self, tokio::sync::oneshot::Receiver<()>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let drained = Drained {
            inner: Some(inner),
            done: false,
            finished: Some(tx),
        };
        (drained, rx)
    }
}

impl HttpBody for Drained {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            this.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Drained {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if self.done || body.is_end_stream() {
            return;
        }
        // Dropped inside a handler or the router, so on the runtime; outside one (a test that
        // builds a request by hand) there is no connection to keep alive either.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let finished = self.finished.take();
            runtime.spawn(async move {
                drain(body).await;
                drop(finished);
            });
        }
    }
}

/// Reads and discards what is left of `body`, for at most [`DRAIN_TIME`] and
/// [`DRAIN_BYTES`].
async fn drain(mut body: Body) {
    let read = async {
        let mut total: u64 = 0;
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            let Ok(frame) = frame else { return };
            if let Some(data) = frame.data_ref() {
                total = total.saturating_add(data.len() as u64);
                if total > DRAIN_BYTES {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_TIME, read).await;
}
