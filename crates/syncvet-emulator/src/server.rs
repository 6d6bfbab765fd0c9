//! Serving: our own accept loop over hyper's HTTP/1.1 connections (with
//! keep-alive), so that faults can reach below HTTP: a dropped request closes
//! its connection with no response, a truncated one announces the full
//! `Content-Length`, sends half the body and closes.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Request, Response, header};
use futures::StreamExt as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::api::{self, DropConnection, TruncateBody};
use crate::state::Shared;
use crate::stats::{Fault, Stats};
use crate::{EmulatorConfig, EmulatorError};

/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The error that makes hyper close a connection without answering.
#[derive(Debug, thiserror::Error)]
#[error("connection dropped by the emulator (injected fault)")]
struct Dropped;

/// The per-connection service: the router, plus the faults and the counters
/// that live below it.
#[derive(Clone)]
struct FaultService {
    router: Router,
    shared: Arc<Shared>,
}

impl hyper::service::Service<Request<Incoming>> for FaultService {
    type Response = Response<Body>;
    type Error = Dropped;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Dropped>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let router = self.router.clone();
        let shared = self.shared.clone();
        Box::pin(async move {
            let counted = !request.uri().path().starts_with("/__admin");
            if counted {
                shared.counters.requests.fetch_add(1, Relaxed);
            }
            let response = match router.oneshot(request.map(Body::new)).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if response.extensions().get::<DropConnection>().is_some() {
                return Err(Dropped);
            }
            if counted {
                shared.counters.status(response.status().as_u16());
            }
            if response.extensions().get::<TruncateBody>().is_some() {
                shared.counters.fault(Fault::Truncate);
                return Ok(truncate(response).await);
            }
            Ok(response)
        })
    }
}

/// The same response, announcing its full length but carrying only half of
/// it, then failing so that hyper closes the connection.
async fn truncate(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let half: Bytes = bytes.slice(..bytes.len() / 2);
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(half)]).chain(
        futures::stream::once(async {
            // Pending for a moment first, so hyper flushes the half it has.
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err(std::io::Error::other(
                "body truncated by the emulator (injected fault)",
            ))
        }),
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

/// An emulator serving on 127.0.0.1 until [`RunningEmulator::shutdown`].
#[derive(Debug)]
pub struct RunningEmulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningEmulator {
    /// Binds `127.0.0.1:port` (0 = any free port) and serves in the
    /// background on the current tokio runtime. An invalid `config` is an
    /// `InvalidInput` error.
    pub async fn start(config: EmulatorConfig, port: u16) -> std::io::Result<RunningEmulator> {
        config
            .validate()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = watch::channel(false);
        let router = api::router(shared.clone());
        let service = FaultService {
            router,
            shared: shared.clone(),
        };
        let task = tokio::spawn(accept_loop(listener, service, stopped));
        tracing::info!(%addr, "emulator listening");
        Ok(RunningEmulator {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API base, `http://127.0.0.1:PORT/api/`.
    pub fn base_url(&self) -> String {
        format!("{}/api/", self.url())
    }

    /// The token endpoint, `http://127.0.0.1:PORT/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/v2.0/token", self.url())
    }

    /// The counters, as `GET /__admin/stats` returns them.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    /// Changes switches at once, like `POST /__admin/config`; the error
    /// names an unknown key or a bad value.
    pub fn update(&self, patch: serde_json::Value) -> Result<(), String> {
        self.shared
            .apply_patch(&patch)
            .map_err(|e: EmulatorError| syncvet_model::Chain(&e).to_string())
    }

    /// The switches in force.
    pub fn config(&self) -> EmulatorConfig {
        self.shared.settings().config.clone()
    }

    /// Stops accepting, lets requests in flight finish (up to a few
    /// seconds), then closes every connection.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    service: FaultService,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                let mut stop = stopped.clone();
                connections.spawn(async move {
                    let connection = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(connection);
                    let result = tokio::select! {
                        result = connection.as_mut() => result,
                        _ = stop.changed() => {
                            connection.as_mut().graceful_shutdown();
                            connection.await
                        }
                    };
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stopped.changed() => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        connections.abort_all();
    }
}
