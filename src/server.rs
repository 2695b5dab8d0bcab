//! Serves HTTP/1.1 connections so that clients cannot hold the server: each connection has
//! limited time to send a request head and to sit idle between requests, at most
//! `MAX_CONNECTIONS` are open at once, accept errors never stop the server, and shutdown closes
//! every connection by a deadline whatever the clients do.
//!
//! hyper's own `header_read_timeout` runs from the moment a connection is ready for a head, so
//! on a kept-alive connection it would also be the idle timeout. A watchdog per connection
//! tells the two apart instead: a head must be complete within `HEADER_READ_TIMEOUT_SECS` of
//! the connection's opening or of its first byte; an idle connection waits for that first byte
//! up to `KEEP_ALIVE_IDLE_SECS`. A request in progress, streams included, is never cut by either.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use crate::config::ConnectionLimits;

/// Pause after an accept error that is not about a single connection (out of file descriptors
/// or memory): the listener stays ready, and retrying at once would only spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one log line per interval about repeated accept errors.
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The accept loop and the connections it serves.
pub struct Server {
    accepting: JoinHandle<()>,
    connections: TaskTracker,
    /// Stop accepting; connections finish the request they serve, then close.
    draining: CancellationToken,
    /// Close every connection now.
    closing: CancellationToken,
}

impl Server {
    /// Accepts connections on `listener` and serves `app` on them, within `limits`.
    pub fn start<S>(listener: TcpListener, app: S, limits: ConnectionLimits) -> Server
    where
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let connections = TaskTracker::new();
        let draining = CancellationToken::new();
        let closing = CancellationToken::new();
        let acceptor = Acceptor {
            listener,
            app,
            limits,
            connections: connections.clone(),
            draining: draining.clone(),
            closing: closing.clone(),
        };
        let accepting = tokio::spawn(acceptor.run());
        Server { accepting, connections, draining, closing }
    }

    /// Stops accepting and lets each connection finish the request it is serving (idle ones
    /// close at once). Connections still open when `deadline` completes are closed.
    pub async fn shut_down(self, deadline: impl Future<Output = ()>) {
        self.draining.cancel();
        let _ = self.accepting.await;
        self.connections.close();
        tokio::select! {
            () = self.connections.wait() => {}
            () = deadline => {
                tracing::warn!(open = self.connections.len(), "closing the connections still open at the end of the shutdown grace period");
                self.closing.cancel();
                self.connections.wait().await;
            }
        }
    }
}

struct Acceptor<S> {
    listener: TcpListener,
    app: S,
    limits: ConnectionLimits,
    connections: TaskTracker,
    draining: CancellationToken,
    closing: CancellationToken,
}

impl<S> Acceptor<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    async fn run(self) {
        let max = self.limits.max_connections;
        let permits = Arc::new(Semaphore::new(max));
        let mut at_capacity = false;
        let mut errors = AcceptErrors::default();
        loop {
            // At the cap nothing is accepted: new connections wait in the kernel's backlog.
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    if at_capacity {
                        tracing::info!(limit = max, "open connections are below MAX_CONNECTIONS again");
                        at_capacity = false;
                    }
                    permit
                }
                Err(_) => {
                    if !at_capacity {
                        tracing::warn!(
                            limit = max,
                            "connection limit reached: {max} connections are open (MAX_CONNECTIONS); new ones wait until others close"
                        );
                        at_capacity = true;
                    }
                    tokio::select! {
                        permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
                        () = self.draining.cancelled() => return,
                    }
                }
            };
            let (stream, remote) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(connection) => connection,
                    Err(err) => {
                        if errors.pause_after(&err) {
                            tokio::select! {
                                () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                                () = self.draining.cancelled() => return,
                            }
                        }
                        continue;
                    }
                },
                () = self.draining.cancelled() => return,
            };
            // Small SSE deltas must leave at once, not wait for the client's delayed ACK (Nagle).
            let _ = stream.set_nodelay(true);
            let connection = Connection {
                remote,
                limits: self.limits,
                draining: self.draining.clone(),
                closing: self.closing.clone(),
                _permit: permit,
            };
            self.connections.spawn(connection.serve(stream, self.app.clone()));
        }
    }
}

/// Accept errors about one connection (it went away before being accepted) are skipped; the
/// others (out of descriptors or memory) are logged, at most once per interval, and paused after.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    not_logged: u64,
}

impl AcceptErrors {
    /// Records `err` and tells whether to pause before accepting again.
    fn pause_after(&mut self, err: &io::Error) -> bool {
        use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
        if matches!(err.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused) {
            tracing::debug!(error = %err, "a connection went away before it was accepted");
            return false;
        }
        if self.last_logged.is_some_and(|at| at.elapsed() < ACCEPT_ERROR_LOG_INTERVAL) {
            self.not_logged += 1;
            return true;
        }
        let out_of_descriptors = matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        if out_of_descriptors {
            tracing::error!(
                error = %err,
                repeated = self.not_logged,
                "cannot accept connections: out of file descriptors; retrying (raise the open-file limit or lower MAX_CONNECTIONS)"
            );
        } else {
            tracing::error!(error = %err, repeated = self.not_logged, "cannot accept connections; retrying");
        }
        self.last_logged = Some(Instant::now());
        self.not_logged = 0;
        true
    }
}

/// One accepted connection and what bounds it.
struct Connection {
    remote: SocketAddr,
    limits: ConnectionLimits,
    draining: CancellationToken,
    closing: CancellationToken,
    /// Counts against `MAX_CONNECTIONS` until the connection is closed.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve<S>(self, stream: TcpStream, app: S)
    where
        S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(WatchedStream { stream, activity: activity.clone() });
        let service = ConnectionService { app, remote: self.remote, activity: activity.clone() };
        let mut http = hyper::server::conn::http1::Builder::new();
        // The watchdog below times request heads (see the module's documentation).
        http.header_read_timeout(None);
        let mut http_connection = pin!(http.serve_connection(io, service));
        let mut draining = false;
        loop {
            let changed = activity.changed.notified();
            let deadline = activity.deadline(&self.limits);
            tokio::select! {
                served = http_connection.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!(remote = %self.remote, error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = changed => {}
                () = sleep_until(deadline) => {
                    if activity.deadline(&self.limits).is_some_and(|deadline| deadline <= Instant::now()) {
                        tracing::debug!(remote = %self.remote, "closing a connection that sent no complete request in time");
                        return;
                    }
                }
                () = self.draining.cancelled(), if !draining => {
                    draining = true;
                    if activity.is_quiet() {
                        return;
                    }
                    // hyper closes the connection once the response in progress is sent.
                    http_connection.as_mut().graceful_shutdown();
                }
                () = self.closing.cancelled() => return,
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What a connection is doing, as its watchdog sees it.
struct Activity {
    phase: Mutex<Phase>,
    /// Woken when the deadline may have come closer.
    changed: Notify,
    /// The last write found the client's receive window full: a response is still being sent.
    write_blocked: AtomicBool,
}

#[derive(Clone, Copy)]
enum Phase {
    /// A request head has begun (or the connection has just opened) and is not complete yet.
    ReadingHead { since: Instant },
    /// Requests are being served; their responses, streams included, are not sent yet.
    Serving { requests: usize },
    /// Kept alive after a response, waiting for the next request's first byte.
    Idle { since: Instant },
}

impl Activity {
    fn new() -> Self {
        Activity {
            phase: Mutex::new(Phase::ReadingHead { since: Instant::now() }),
            changed: Notify::new(),
            write_blocked: AtomicBool::new(false),
        }
    }

    fn phase(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().expect("connection activity lock")
    }

    /// When the connection is closed unless a request comes; `None` while one is served.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        match *self.phase() {
            Phase::ReadingHead { since } => Some(since + limits.header_read_timeout),
            Phase::Serving { .. } => None,
            Phase::Idle { since } => Some(since + limits.keep_alive_idle),
        }
    }

    fn received_bytes(&self) {
        let mut phase = self.phase();
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::ReadingHead { since: Instant::now() };
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> RequestInFlight {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Serving { requests } => Phase::Serving { requests: requests + 1 },
            Phase::ReadingHead { .. } | Phase::Idle { .. } => Phase::Serving { requests: 1 },
        };
        RequestInFlight(self.clone())
    }

    fn request_ended(&self) {
        let mut phase = self.phase();
        if let Phase::Serving { requests } = *phase {
            *phase = if requests > 1 { Phase::Serving { requests: requests - 1 } } else { Phase::Idle { since: Instant::now() } };
            self.changed.notify_one();
        }
    }

    /// No request in progress and nothing left to write: closing now loses nothing.
    fn is_quiet(&self) -> bool {
        !matches!(*self.phase(), Phase::Serving { .. }) && !self.write_blocked.load(Ordering::Relaxed)
    }
}

/// Keeps a request counted from its head until its response is sent (or dropped).
struct RequestInFlight(Arc<Activity>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// The client's socket, telling the watchdog when bytes arrive and when writes stall.
struct WatchedStream {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for WatchedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.received_bytes();
        }
        polled
    }
}

impl AsyncWrite for WatchedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, data);
        self.activity.write_blocked.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, data);
        self.activity.write_blocked.store(polled.is_pending(), Ordering::Relaxed);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves one connection's requests with the app. Like axum's
/// `into_make_service_with_connect_info`, it gives every request the peer's address.
struct ConnectionService<S> {
    app: S,
    remote: SocketAddr,
    activity: Arc<Activity>,
}

impl<S> hyper::service::Service<hyper::Request<Incoming>> for ConnectionService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_started();
        let mut request = request.map(axum::body::Body::new);
        request.extensions_mut().insert(ConnectInfo(self.remote));
        let response = self.app.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| TrackedBody { body, _in_flight: in_flight }))
        })
    }
}

/// A response body that keeps its request in flight until it is sent: a stream is a request
/// in progress, never an idle connection.
struct TrackedBody {
    body: axum::body::Body,
    _in_flight: RequestInFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
