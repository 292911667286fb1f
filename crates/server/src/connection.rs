//! One client connection: handshake, then a reader that handles the client's messages
//! and a writer that drains the connection's outgoing queue in batches.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use state_sync_protocol::{
    ClientMessage, ConnectToState, FailureReason, ServerMessage, UpdateState,
};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};

use crate::handshake::{self, Refusal};
use crate::hooks::{panic_message, run_hook};
use crate::outbox::{Closer, Outbox, Queue};
use crate::store::{Origin, Prior, StateEntry, frame};
use crate::syncer::{ApplyFailure, Shared};
use crate::tls::Stream;

/// Most frames written before one flush.
const MAX_BATCH: usize = 256;
/// How long a closing connection may take to send what is queued and its close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

struct Attachment<K> {
    entry: Arc<StateEntry<K>>,
    subscriber: usize,
    session: Option<String>,
}

struct Connection<K> {
    shared: Arc<Shared<K>>,
    client: Arc<K>,
    identifier: String,
    outbox: Outbox,
    closer: Arc<Closer>,
    attachment: Option<Attachment<K>>,
}

/// Serves one accepted TCP connection until it closes or the server shuts down.
pub(crate) async fn serve<K: Send + Sync + 'static>(
    shared: Arc<Shared<K>>,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    closer: Arc<Closer>,
) {
    // Boxed: the handshake's state lives only while it runs, not in every connection's
    // task for its whole life.
    let upgrade = tokio::time::timeout(
        shared.config.handshake_timeout,
        Box::pin(upgrade(&shared, tcp, remote_addr)),
    );
    let (ws, client, identifier) = tokio::select! {
        result = upgrade => match result {
            Ok(Some(upgraded)) => upgraded,
            Ok(None) => return,
            Err(_) => {
                tracing::debug!(%remote_addr, "handshake timed out");
                return;
            }
        },
        () = closer.token().cancelled() => return,
    };
    tracing::debug!(%remote_addr, %identifier, "client connected");
    let registration = shared.register(&identifier, &closer);
    let (sink, source) = ws.split();
    let (outbox, queue) = Outbox::new(
        shared.config.outgoing_queue,
        shared.config.outgoing_queue_bytes,
        Arc::clone(&closer),
    );
    let mut connection = Connection {
        shared: Arc::clone(&shared),
        client,
        identifier: identifier.clone(),
        outbox,
        closer: Arc::clone(&closer),
        attachment: None,
    };
    // The writer is a task of its own, woken only when there is something to write
    // (polling it together with the reader would poll the reader on every broadcast).
    let mut writer = AbortOnDrop(tokio::spawn(write_loop(
        sink,
        queue,
        Arc::clone(&closer),
        shared.config.write_timeout,
    )));
    tokio::select! {
        _ = &mut writer.0 => connection.detach(),
        () = connection.read_loop(source) => {
            // The client closed, or its stream failed: let the writer send what is queued.
            connection.detach();
            closer.close(CloseCode::Normal, "");
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer.0).await;
        }
        () = closer.token().cancelled() => {
            // Overflow, an oversized frame, or shutdown: leave the state at once, then
            // give the writer a moment to send what is queued and the close frame (it
            // may be stuck writing to a client that does not read).
            connection.detach();
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut writer.0).await;
        }
    }
    shared.unregister(registration);
    tracing::debug!(%remote_addr, %identifier, "client disconnected");
}

/// TLS, the request head, authorization and the 101 answer. `None` when the client was
/// refused or went away (already logged).
async fn upgrade<K: Send + Sync + 'static>(
    shared: &Shared<K>,
    tcp: TcpStream,
    remote_addr: SocketAddr,
) -> Option<(WebSocketStream<Stream>, Arc<K>, String)> {
    let mut stream = match shared.tls() {
        #[cfg(feature = "tls")]
        Some(tls) => match tls.acceptor.accept(tcp).await {
            Ok(tls_stream) => Stream::Tls(Box::new(tls_stream)),
            Err(e) => {
                tracing::debug!(%remote_addr, "TLS handshake failed: {e}");
                return None;
            }
        },
        _ => Stream::Plain(tcp),
    };
    let head = match handshake::read_head(&mut stream, remote_addr).await {
        Ok(Some(head)) => head,
        Ok(None) => return None,
        Err(refusal) => {
            if let (Some(root), Some((method, target))) =
                (&shared.config.static_files, &refusal.plain_request)
            {
                let _ = crate::static_files::answer(&mut stream, root, method, target).await;
                return None;
            }
            tracing::debug!(%remote_addr, status = %refusal.status, "upgrade refused: {}", refusal.body);
            let _ = handshake::refuse(&mut stream, &refusal).await;
            return None;
        }
    };
    let identifier = head.request.identifier.clone();
    // The middleware runs in its own task so that a panic in it is caught.
    let mut authorization = AbortOnDrop(tokio::spawn((shared.authorizer)(head.request.clone())));
    let refusal = match tokio::time::timeout(shared.config.hook_timeout, &mut authorization.0).await
    {
        Ok(Ok(Ok(client))) => {
            if let Err(e) = handshake::accept(&mut stream, &head).await {
                tracing::debug!(%remote_addr, "writing the upgrade response failed: {e}");
                return None;
            }
            let config = shared.config.websocket_config();
            let ws = WebSocketStream::from_partially_read(
                stream,
                head.leftover,
                Role::Server,
                Some(config),
            )
            .await;
            return Some((ws, Arc::new(client), identifier));
        }
        Ok(Ok(Err(rejection))) => Refusal::new(StatusCode::UNAUTHORIZED, rejection.reason),
        Ok(Err(join_error)) => {
            let message = match join_error.try_into_panic() {
                Ok(payload) => panic_message(payload.as_ref()),
                Err(e) => e.to_string(),
            };
            tracing::error!(%remote_addr, %identifier, "authorization middleware panicked: {message}");
            Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "authorization failed")
        }
        Err(_) => {
            tracing::error!(%remote_addr, %identifier, "authorization middleware timed out");
            Refusal::new(StatusCode::SERVICE_UNAVAILABLE, "authorization timed out")
        }
    };
    tracing::debug!(%remote_addr, %identifier, status = %refusal.status, "upgrade refused: {}", refusal.body);
    let _ = handshake::refuse(&mut stream, &refusal).await;
    None
}

/// Drains the outgoing queue: waits for one frame, takes whatever else is queued (up
/// to [`MAX_BATCH`]) and flushes once. When asked to close, sends what is queued and
/// the close frame.
async fn write_loop<S>(mut sink: S, mut queue: Queue, closer: Arc<Closer>, write_timeout: Duration)
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    // Created once: registering with the token on every frame would cost a lock.
    let cancelled = closer.token().cancelled();
    tokio::pin!(cancelled);
    let closing = loop {
        let first = tokio::select! {
            biased;
            () = &mut cancelled => break true,
            frame = queue.recv() => match frame {
                Some(frame) => frame,
                None => break true,
            },
        };
        // Every write must make progress within the timeout; the batch as a whole may
        // take longer.
        let mut written = timed(write_timeout, sink.feed(Message::Text(first))).await;
        for _ in 1..MAX_BATCH {
            let Some(frame) = queue.try_recv().filter(|_| written.is_ok()) else {
                break;
            };
            written = timed(write_timeout, sink.feed(Message::Text(frame))).await;
        }
        if written.is_ok() {
            written = timed(write_timeout, sink.flush()).await;
        }
        match written {
            Ok(()) => {}
            Err(WriteFailure::Error(e)) => {
                tracing::debug!("writing to a client failed: {e}");
                break false;
            }
            Err(WriteFailure::TimedOut) => {
                tracing::warn!("closing a connection that accepted nothing for {write_timeout:?}");
                closer.close(CloseCode::Policy, "write timeout");
                break true;
            }
        }
    };
    if closing {
        let close = async {
            while let Some(frame) = queue.try_recv() {
                sink.feed(Message::Text(frame)).await?;
            }
            sink.send(Message::Close(Some(closer.frame()))).await
        };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
    }
    closer.close(CloseCode::Error, "");
}

/// Aborts a task when dropped: neither the authorization middleware nor a writer stuck
/// on a client that does not read may outlive its connection.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum WriteFailure {
    Error(WsError),
    TimedOut,
}

/// Runs one write. The timer is armed only when the write does not complete at once,
/// so the common case (the socket has room) costs no timer.
async fn timed(
    limit: Duration,
    write: impl std::future::Future<Output = Result<(), WsError>>,
) -> Result<(), WriteFailure> {
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(write.as_mut().poll(cx))).await;
    if let std::task::Poll::Ready(result) = first {
        return result.map_err(WriteFailure::Error);
    }
    match tokio::time::timeout(limit, write).await {
        Ok(result) => result.map_err(WriteFailure::Error),
        Err(_) => Err(WriteFailure::TimedOut),
    }
}

impl<K: Send + Sync + 'static> Connection<K> {
    async fn read_loop<S>(&mut self, mut source: S)
    where
        S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
    {
        while let Some(item) = source.next().await {
            match item {
                Ok(Message::Text(text)) => match ClientMessage::from_json(text.as_str()) {
                    // Boxed, so that an idle connection does not carry their state.
                    Ok(ClientMessage::ConnectToState(request)) => {
                        Box::pin(self.connect_to_state(request)).await
                    }
                    Ok(ClientMessage::UpdateState(request)) => {
                        Box::pin(self.update_state(request)).await
                    }
                    Ok(other) => self.reply(&ServerMessage::UnsupportedMessageType {
                        message: format!("Message type {} is not supported", other.code()),
                    }),
                    Err(error) => {
                        tracing::debug!("invalid message from a client: {error}");
                        self.reply(error.reply());
                    }
                },
                Ok(Message::Binary(_)) => self.reply(&ServerMessage::update_failed(
                    "Invalid message: binary frames are not supported; send JSON text frames",
                    FailureReason::Invalid,
                    None,
                )),
                Ok(Message::Close(_)) => break,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                    tracing::debug!("a client sent a frame of {size} bytes (maximum {max_size})");
                    self.reply(&ServerMessage::update_failed(
                        format!("Invalid message: a frame of {size} bytes exceeds the maximum of {max_size} bytes"),
                        FailureReason::Invalid,
                        None,
                    ));
                    self.closer.close(CloseCode::Size, "message too big");
                    break;
                }
                Err(e) => {
                    tracing::debug!("reading from a client failed: {e}");
                    break;
                }
            }
        }
    }

    fn reply(&self, message: &ServerMessage) {
        self.outbox.push(frame(message));
    }

    fn connection_error(&self, message: String) {
        self.reply(&ServerMessage::StateConnectionError { message });
    }

    async fn connect_to_state(&mut self, request: ConnectToState) {
        let id = request.state_identifier;
        let Some(entry) = self.shared.store.get(&id) else {
            self.connection_error(format!("State with identifier {id} does not exist"));
            return;
        };
        if let Some(allow) = entry.allow_connecting_client.clone() {
            let client = Arc::clone(&self.client);
            let limit = self.shared.config.hook_timeout;
            match run_hook("allow_connecting_client", limit, move || allow(&client)).await {
                Ok(true) => {}
                Ok(false) => {
                    return self.connection_error("Not allowed to connect to this state".into());
                }
                Err(failure) => {
                    return self.connection_error(format!(
                        "Could not connect to state {id}: its allowConnectingClient hook failed ({failure})"
                    ));
                }
            }
        }
        // Leave the old state before joining the new one, so that no update of the old
        // state can be queued after the new state's snapshot. Its self-destruct hook is
        // asked afterwards, and not at all when re-attaching to the same state.
        let previous = self.attachment.take();
        if let Some(previous) = &previous {
            previous.entry.detach(previous.subscriber);
        }
        // Sessions are kept per client identifier, so that clients cannot collide.
        let session = request.session.map(|s| format!("{}\n{s}", self.identifier));
        let attached = entry.attach(self.outbox.clone(), session.clone());
        if let Some(previous) = previous {
            let left_for_good = !Arc::ptr_eq(&previous.entry, &entry);
            self.shared.after_detach(previous.entry, left_for_good);
        }
        let Some(subscriber) = attached else {
            return self.connection_error(format!("State with identifier {id} does not exist"));
        };
        self.attachment = Some(Attachment {
            entry,
            subscriber,
            session,
        });
    }

    async fn update_state(&mut self, request: UpdateState) {
        let UpdateState {
            updates,
            request_id,
        } = request;
        let Some(attachment) = &self.attachment else {
            return self.reply(&ServerMessage::update_failed(
                "Could not update state: this connection is not attached to a state; send CONNECT_TO_STATE first",
                FailureReason::NotAttached,
                request_id,
            ));
        };
        let entry = Arc::clone(&attachment.entry);
        let session = attachment.session.clone();
        let subscriber = attachment.subscriber;
        let tracked = session.as_deref().zip(request_id);
        if let Some((session, request_id)) = tracked
            && let Some(reply) = prior_reply(entry.prior(session, request_id), request_id)
        {
            return self.reply(&reply);
        }
        let origin = Origin {
            subscriber,
            request_id,
            session: session.as_deref(),
        };
        let client = Some(Arc::clone(&self.client));
        let failure = match self
            .shared
            .intercept_and_apply(&entry, updates, client, Some(origin))
            .await
        {
            Ok(_) => return,
            Err(failure) => failure,
        };
        let (reason, message) = match failure {
            ApplyFailure::Duplicate(prior) => {
                if let Some(reply) = request_id.and_then(|id| prior_reply(prior, id)) {
                    self.reply(&reply);
                }
                return;
            }
            ApplyFailure::Gone => (
                FailureReason::StateDoesNotExist,
                format!(
                    "Could not update state: state {} does not exist anymore",
                    entry.id
                ),
            ),
            ApplyFailure::Vetoed => (
                FailureReason::Vetoed,
                "Update vetoed by the server".to_owned(),
            ),
            ApplyFailure::InterceptorFailed(why) => (
                FailureReason::InterceptorFailed,
                format!("Could not update state: its interceptStateUpdate hook failed ({why})"),
            ),
        };
        if let Some((session, request_id)) = tracked
            && reason != FailureReason::StateDoesNotExist
        {
            entry.record_failure(session, request_id, reason, &message);
        }
        // The original vetoes silently; clients that send a request id are told.
        if reason != FailureReason::Vetoed || request_id.is_some() {
            self.reply(&ServerMessage::update_failed(message, reason, request_id));
        }
    }

    fn detach(&mut self) {
        if let Some(attachment) = self.attachment.take() {
            self.shared.detach(attachment.entry, attachment.subscriber);
        }
    }
}

/// The answer to a retried update, or `None` when it is new.
fn prior_reply(prior: Prior, request_id: u64) -> Option<ServerMessage> {
    match prior {
        Prior::New => None,
        Prior::Seen(outcome) => Some(outcome.reply(request_id)),
        Prior::Forgotten => Some(ServerMessage::update_failed(
            format!(
                "Could not update state: request {request_id} is older than the {} updates this \
                 server remembers of the session, so whether it was applied is unknown",
                state_sync_protocol::DEDUP_WINDOW
            ),
            FailureReason::OutcomeUnknown,
            Some(request_id),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every connection's tasks hold these futures for its whole life: keep the
    /// handshake and message handling boxed (see `serve` and `read_loop`).
    #[test]
    fn connection_tasks_stay_small() {
        type Sink = futures_util::stream::SplitSink<WebSocketStream<Stream>, Message>;
        let serve_size = future_size(serve::<()>);
        let writer_size = future_size(write_loop::<Sink>);
        assert!(serve_size <= 1024, "serve future: {serve_size} bytes");
        assert!(writer_size <= 1024, "writer future: {writer_size} bytes");
    }
}
