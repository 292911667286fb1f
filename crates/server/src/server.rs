//! The accept loop, the connection limit and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http_io::{ErrorResponse, write_refusal};
use crate::outbox::Closer;
use crate::runtime::Runtime;

/// TCP keepalive: probes after this long without traffic, this often, this many times.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);
const KEEPALIVE_RETRIES: u32 = 4;

/// Connections over the limit being answered 503 at once, at most.
const REFUSALS_IN_FLIGHT: usize = 32;

/// The connection limit: the configured one, lowered to what the process's open-file
/// limit (`RLIMIT_NOFILE`, read from `/proc/self/limits`) allows with a reserve for
/// the listener, refusals, files and the rest, so that a client over the limit gets a
/// 503 instead of waiting in the accept queue of a process out of file descriptors.
pub(crate) fn connection_limit(configured: usize) -> usize {
    match open_file_limit() {
        Some(files) => {
            let reserve = (files / 20).max(REFUSALS_IN_FLIGHT + 32);
            configured.min(files.saturating_sub(reserve).max(1))
        }
        None => configured,
    }
}

/// The soft limit on open files, where the system says (Linux).
fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How long [`Server::shutdown`] waits for connections to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running server: its address, and the way to stop it.
///
/// Dropping a `Server` does not stop it; call [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    connections: TaskTracker,
    accept_loop: JoinHandle<()>,
}

impl Server {
    pub(crate) fn spawn<K: Send + Sync + 'static>(
        runtime: Arc<Runtime<K>>,
        listener: TcpListener,
    ) -> crate::Result<Server> {
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let connections = TaskTracker::new();
        let accept_loop = tokio::spawn(accept_loop(
            runtime,
            listener,
            shutdown.clone(),
            connections.clone(),
        ));
        tracing::info!(%local_addr, "state syncer listening");
        Ok(Server {
            local_addr,
            shutdown,
            connections,
            accept_loop,
        })
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every connection with close code 1001 ("going away")
    /// after sending what was queued for it, and waits (up to 5 s) for them to end.
    /// The syncer keeps its states and can serve again; but every client detaches,
    /// so `self_destruct` hooks run as on any disconnect (a hook that removes empty
    /// states removes them).
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.accept_loop.await;
        self.connections.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within {SHUTDOWN_GRACE:?}");
        }
        tracing::info!(local_addr = %self.local_addr, "state syncer stopped");
    }
}

async fn accept_loop<K: Send + Sync + 'static>(
    runtime: Arc<Runtime<K>>,
    listener: TcpListener,
    shutdown: CancellationToken,
    connections: TaskTracker,
) {
    let max = connection_limit(runtime.config.max_connections);
    let limit = Arc::new(Semaphore::new(max));
    // Refusals hold a socket for up to a second; past this many at once the next
    // connection over the limit is closed without an answer.
    let refusals = Arc::new(Semaphore::new(REFUSALS_IN_FLIGHT));
    let mut backoff = Duration::from_millis(1);
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote_addr) = match accepted {
            Ok(accepted) => {
                backoff = Duration::from_millis(1);
                accepted
            }
            Err(e) => {
                // Typically out of file descriptors: wait for connections to close.
                tracing::warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        // A peer that vanished without a FIN (a pulled cable, a crashed host) is found
        // by TCP keepalive and its connection closed, even on a quiet state.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        let runtime = Arc::clone(&runtime);
        match Arc::clone(&limit).try_acquire_owned() {
            Ok(permit) => {
                let closer = Arc::new(Closer::child_of(&shutdown));
                connections.spawn(async move {
                    crate::connection::serve(runtime, tcp, remote_addr, closer).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(%remote_addr, "connection limit ({max}) reached; refusing a connection");
                crate::metrics::handshake_refused("full");
                let Ok(refusal) = Arc::clone(&refusals).try_acquire_owned() else {
                    drop(tcp);
                    continue;
                };
                connections.spawn(async move {
                    let _refusal = refusal;
                    let mut tcp = tcp;
                    let refusal = ErrorResponse::new(
                        http::StatusCode::SERVICE_UNAVAILABLE,
                        "too many connections; try again later",
                    );
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        write_refusal(&mut tcp, &refusal).await?;
                        // Read what the client sent already (its request): closing with
                        // unread data would reset the connection, and the reset can
                        // overtake the 503 on its way.
                        let mut discard = [0u8; 512];
                        let _ = tokio::time::timeout(Duration::from_millis(100), async {
                            while tokio::io::AsyncReadExt::read(&mut tcp, &mut discard).await? > 0 {
                            }
                            std::io::Result::Ok(())
                        })
                        .await;
                        std::io::Result::Ok(())
                    })
                    .await;
                });
            }
        }
    }
}
