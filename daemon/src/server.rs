//! server: the listeners and their accept loops — TLS with client certificates on the API
//! listener, plain HTTP on the public and metrics listeners — with a connection bound, handshake
//! timeouts, and graceful shutdown that lets in-flight requests finish.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::wire::ProblemOnParseError;
use crate::api::{self, PeerCertificate};
use crate::app::App;
use crate::config;
use crate::crypto;
use crate::metrics::Metrics;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest HTTP/2 header block read. Above `api::input::MAX_HEADER_BYTES`, so that a request
/// with too many header bytes reaches the API's check and gets a problem+json 431, instead of
/// hyper's default of 16 KiB, past which h2 resets the stream or the whole connection. It is
/// near HTTP/1's read buffer (about 400 KiB), which bounds the same memory per request.
const H2_MAX_HEADER_LIST: u32 = 512 * 1024;

/// The three bound listeners. Binding is separate from serving so that tests can bind port 0
/// and read the addresses back.
#[derive(Debug)]
pub struct Listeners {
    /// mTLS API.
    pub api: TcpListener,
    /// Public, no client authentication.
    pub public: TcpListener,
    /// Prometheus metrics.
    pub metrics: TcpListener,
}

/// The bound addresses.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// mTLS API.
    pub api: SocketAddr,
    /// Public listener.
    pub public: SocketAddr,
    /// Metrics listener.
    pub metrics: SocketAddr,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(cfg: &config::Listen) -> io::Result<Self> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))
        };
        Ok(Listeners {
            api: bind(cfg.api).await?,
            public: bind(cfg.public).await?,
            metrics: bind(cfg.metrics).await?,
        })
    }

    /// The addresses actually bound.
    pub fn addresses(&self) -> io::Result<Addresses> {
        Ok(Addresses {
            api: self.api.local_addr()?,
            public: self.public.local_addr()?,
            metrics: self.metrics.local_addr()?,
        })
    }
}

/// Serves until `shutdown` is cancelled, then stops accepting and waits up to the configured
/// grace period for open connections to finish their requests.
pub async fn run(
    app: App,
    tls: Arc<rustls::ServerConfig>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let limit = app.config.max_connections.max(1);
    let grace = Duration::from_secs(app.config.shutdown_grace_secs);
    let metrics = app.metrics.clone();
    let loops = [
        (
            "api",
            listeners.api,
            api::api_router(app.clone()),
            Some(TlsAcceptor::from(tls)),
        ),
        (
            "public",
            listeners.public,
            api::public_router(app.clone()),
            None,
        ),
        ("metrics", listeners.metrics, api::metrics_router(app), None),
    ];
    for (name, listener, router, tls) in loops {
        let ctx = LoopContext {
            name,
            router,
            tls,
            permits: Arc::new(Semaphore::new(limit)),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            metrics: metrics.clone(),
        };
        tracker.spawn(accept_loop(listener, ctx));
    }
    shutdown.cancelled().await;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down; draining connections"
    );
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
    }
    Ok(())
}

#[derive(Clone)]
struct LoopContext {
    name: &'static str,
    router: Router,
    tls: Option<TlsAcceptor>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    metrics: Metrics,
}

async fn accept_loop(listener: TcpListener, ctx: LoopContext) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            p = ctx.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = ctx.name, error = %e, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let ctx2 = ctx.clone();
        ctx.tracker.spawn(async move {
            let gauge = ctx2.metrics.connections.with_label_values(&[ctx2.name]);
            gauge.inc();
            connection(stream, peer, &ctx2).await;
            gauge.dec();
            drop(permit);
        });
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(listener = ctx.name, %peer))]
async fn connection(stream: TcpStream, peer: SocketAddr, ctx: &LoopContext) {
    let parse_errors = ctx.metrics.http_parse_errors.with_label_values(&[ctx.name]);
    let Some(acceptor) = &ctx.tls else {
        let stream = ProblemOnParseError::new(stream, parse_errors);
        serve(stream, ctx.router.clone(), &ctx.shutdown).await;
        return;
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            ctx.metrics
                .tls_handshakes
                .with_label_values(&["failed"])
                .inc();
            tracing::debug!(error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            ctx.metrics
                .tls_handshakes
                .with_label_values(&["timeout"])
                .inc();
            return;
        }
    };
    ctx.metrics.tls_handshakes.with_label_values(&["ok"]).inc();
    // The verifier requires a client certificate, and resumed sessions carry the one verified
    // at first; without one (impossible by configuration) requests are refused by `identify`.
    let peer_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|c| PeerCertificate {
            fingerprint: crypto::sha256_hex(c.as_ref()).into(),
        });
    let router = match peer_cert {
        Some(p) => ctx.router.clone().layer(axum::Extension(p)),
        None => ctx.router.clone(),
    };
    serve(
        ProblemOnParseError::new(tls, parse_errors),
        router,
        &ctx.shutdown,
    )
    .await;
}

async fn serve<S>(stream: S, router: Router, shutdown: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let mut builder = ConnBuilder::new(TokioExecutor::new());
    builder.http2().max_header_list_size(H2_MAX_HEADER_LIST);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error while draining");
            }
        }
    }
}
