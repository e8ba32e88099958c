//! The HTTP server beside a node's gRPC port (the gateway's `/api`): hyper with limits a
//! server facing the outside needs — headers that stall, bodies that stall, connections
//! left idle, and too many connections are all cut off.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use config::HttpLimits;

use crate::http_tls::PublicTls;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` (over TLS when `tls` is given) until `drain` is
/// cancelled, then lets every connection finish its requests in flight and returns.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: HttpLimits,
    tls: Option<PublicTls>,
    drain: CancellationToken,
) {
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().reload_on_change(drain.clone()));
    }
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        limits.body_read_timeout,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's backlog.
        let permit = tokio::select! {
            _ = drain.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = drain.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(%error, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Each request knows the address it came from (axum's `ConnectInfo`): a rate
        // limit may key by it.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let (drain, limits) = (drain.clone(), limits.clone());
        let acceptor = tls.as_ref().map(PublicTls::acceptor);
        connections.spawn(async move {
            let _permit = permit;
            let Some(acceptor) = acceptor else {
                serve_connection(stream, service, &limits, drain).await;
                return;
            };
            // The handshake is held to the same patience as a request's headers.
            match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, service, &limits, drain).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake did not finish in time"),
            }
        });
        // Reap finished connections as we go, so the set stays the size of what is open.
        while connections.try_join_next().is_some() {}
    }
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<S, IO>(
    stream: IO,
    service: S,
    limits: &HttpLimits,
    drain: CancellationToken,
) where
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<axum::body::Body>,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(LastActivity::now());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also how long an idle keep-alive connection may wait for its next request.
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let mut connection = pin!(builder.serve_connection_with_upgrades(io, service));
    let mut closing = false;
    loop {
        let idle_check = tokio::time::sleep(limits.idle_timeout / 4);
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = drain.cancelled(), if !closing => {
                closing = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = idle_check, if !closing => {
                // Nothing read or written for the idle timeout: close after what is in
                // flight (an HTTP/2 connection's streams, an HTTP/1 reply) is done.
                if activity.idle_for() >= limits.idle_timeout {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// When bytes last moved on a connection, in milliseconds since it opened.
struct LastActivity {
    opened: Instant,
    at_ms: AtomicU64,
}

impl LastActivity {
    fn now() -> Self {
        Self {
            opened: Instant::now(),
            at_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.at_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let since_open = self.opened.elapsed().as_millis() as u64;
        Duration::from_millis(since_open.saturating_sub(self.at_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that notes each read and write, for the idle timeout.
struct Watched<S> {
    inner: S,
    activity: Arc<LastActivity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
