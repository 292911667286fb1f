//! One client connection: the handshake, then a reader that handles the client's
//! messages (attach, update) beside a writer task ([`crate::writer`]).

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use state_sync_protocol::{
    ClientMessage, ConnectToState, FailureReason, ServerMessage, Update, UpdateState,
};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};

use crate::failure::{Failure, MAX_SESSIONS_PER_CONNECTION};
use crate::fanout::frame;
use crate::handshake::{self, Handshake, Upgraded};
use crate::hooks::run_hook;
use crate::outbox::{Closer, Outbox};
use crate::runtime::Runtime;
use crate::session_log::{Outcome, SessionKey};
use crate::state::{Origin, State};
use crate::static_files;
use crate::writer::{AbortOnDrop, CLOSE_TIMEOUT, write_loop};

struct Attachment<K> {
    state: Arc<State<K>>,
    subscriber: usize,
    session: Option<SessionKey>,
    /// The highest request id the session sent before it attached, when it said.
    last_sent: Option<u64>,
}

struct Connection<K> {
    runtime: Arc<Runtime<K>>,
    /// The session ids this connection attached with (at most
    /// [`MAX_SESSIONS_PER_CONNECTION`]).
    sessions: Vec<String>,
    client: Arc<K>,
    identifier: String,
    outbox: Outbox,
    closer: Arc<Closer>,
    attachment: Option<Attachment<K>>,
}

/// Serves one accepted TCP connection until it closes or the server shuts down.
pub(crate) async fn serve<K: Send + Sync + 'static>(
    runtime: Arc<Runtime<K>>,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    closer: Arc<Closer>,
) {
    // Boxed: the handshake's state (and a download's) lives only while it runs, not
    // in every connection's task for its whole life.
    let Some(Upgraded {
        ws,
        client,
        identifier,
    }) = Box::pin(open(&runtime, tcp, remote_addr, &closer)).await
    else {
        return;
    };
    tracing::debug!(%remote_addr, %identifier, "client connected");
    let registration = runtime.register(&identifier, &closer);
    let (sink, source) = ws.split();
    let (outbox, queue) = Outbox::new(
        runtime.config.outgoing_queue,
        runtime.config.outgoing_queue_bytes,
        Arc::clone(&closer),
    );
    let mut connection = Connection {
        runtime: Arc::clone(&runtime),
        sessions: Vec::new(),
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
        runtime.config.write_timeout,
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
    runtime.unregister(registration);
    tracing::debug!(%remote_addr, %identifier, "client disconnected");
}

/// The handshake within its time limit; a plain request for a file is answered after
/// it, outside that limit. `None` unless a WebSocket client came out of it.
async fn open<K: Send + Sync + 'static>(
    runtime: &Runtime<K>,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    closer: &Closer,
) -> Option<Upgraded<K>> {
    let upgrade = tokio::time::timeout(
        runtime.config.handshake_timeout,
        handshake::perform(runtime, tcp, remote_addr),
    );
    let handshake = tokio::select! {
        result = upgrade => match result {
            Ok(handshake) => handshake,
            Err(_) => {
                tracing::debug!(%remote_addr, "handshake timed out");
                return None;
            }
        },
        () = closer.token().cancelled() => return None,
    };
    match handshake {
        Handshake::Upgraded(upgraded) => Some(upgraded),
        Handshake::File {
            stream,
            method,
            target,
        } => {
            serve_file(runtime, stream, method, target, closer, remote_addr).await;
            None
        }
        Handshake::Done => None,
    }
}

/// Answers a plain request with a file, outside the handshake's time limit.
async fn serve_file<K>(
    runtime: &Runtime<K>,
    stream: Box<crate::tls::Stream>,
    method: String,
    target: String,
    closer: &Closer,
    remote_addr: SocketAddr,
) {
    let Some(root) = &runtime.config.static_files else {
        return;
    };
    let answer = static_files::answer(stream, root, &method, &target, runtime.config.write_timeout);
    tokio::select! {
        result = answer => if let Err(e) = result {
            tracing::debug!(%remote_addr, "serving {target} failed: {e}");
        },
        () = closer.token().cancelled() => {}
    }
}

impl<K: Send + Sync + 'static> Connection<K> {
    async fn read_loop<S>(&mut self, mut source: S)
    where
        S: futures_util::Stream<Item = Result<Message, WsError>> + Unpin,
    {
        loop {
            // A sender does not run ahead of its own echoes, and the writers get to run
            // between messages (see the outbox policy).
            // Boxed, and only when needed: the wait must not weigh on every idle
            // connection's task.
            if self.outbox.over_half() {
                Box::pin(self.outbox.wait_for_room()).await;
            }
            tokio::task::consume_budget().await;
            let Some(item) = source.next().await else {
                break;
            };
            match item {
                Ok(Message::Text(text)) => match ClientMessage::from_json(text.as_str()) {
                    // Boxed, so that an idle connection does not carry their state.
                    Ok(ClientMessage::ConnectToState(request)) => {
                        Box::pin(self.connect_to_state(request)).await
                    }
                    Ok(ClientMessage::UpdateState(request)) => {
                        Box::pin(self.update_state(request)).await
                    }
                    Err(error) => {
                        tracing::debug!("invalid message from a client: {error}");
                        // A refused attach (8) leaves the connection attached to
                        // nothing, whatever refused it.
                        if matches!(error.reply(), ServerMessage::StateConnectionError { .. }) {
                            self.detach();
                        }
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
                    // RFC 6455 section 7.4.1: what the close code says about the error.
                    match e {
                        WsError::Protocol(_) => {
                            self.closer.close(CloseCode::Protocol, "protocol error");
                        }
                        WsError::Utf8(_) => {
                            self.closer
                                .close(CloseCode::Invalid, "invalid UTF-8 in a text frame");
                        }
                        _ => {}
                    }
                    break;
                }
            }
        }
    }

    fn reply(&self, message: &ServerMessage) {
        self.outbox.push(frame(message));
    }

    /// Tells the client why its request did nothing (when the protocol says anything).
    /// When Redis cannot be reached, the connection is closed instead, so that the
    /// client reconnects and retries.
    fn fail(&self, failure: &Failure, request_id: Option<u64>) {
        #[cfg(feature = "redis")]
        if let Failure::Unreachable(why) = failure {
            tracing::warn!("closing a connection: {why}");
            self.closer
                .close(CloseCode::from(crate::cluster::UNREACHABLE_CLOSE_CODE), why);
            return;
        }
        if let Some(reply) = failure.reply(request_id) {
            self.outbox.push(reply);
        }
    }

    /// A failed attach leaves the connection attached to nothing, as in the original
    /// (and as our clients assume): the previous state's updates stop coming.
    fn attach_failed(&mut self, failure: &Failure) {
        self.detach();
        self.fail(failure, None);
    }

    async fn connect_to_state(&mut self, request: ConnectToState) {
        let id = request.state_identifier;
        let Some(state) = self.runtime.states.get(&id) else {
            return self.attach_failed(&Failure::NoSuchState(id));
        };
        if let Some(session) = &request.session
            && !self.sessions.contains(session)
        {
            if self.sessions.len() == MAX_SESSIONS_PER_CONNECTION {
                return self.attach_failed(&Failure::TooManySessions);
            }
            self.sessions.push(session.clone());
        }
        if let Some(allow) = state.hooks.allow_connecting_client.clone() {
            let client = Arc::clone(&self.client);
            let limit = self.runtime.config.hook_timeout;
            match run_hook("allow_connecting_client", limit, move || allow(&client)).await {
                Ok(true) => {}
                Ok(false) => return self.attach_failed(&Failure::NotAllowed),
                Err(cause) => {
                    return self.attach_failed(&Failure::AllowHookFailed { state: id, cause });
                }
            }
        }
        // Shared through Redis, the state is attached once it is loaded from there.
        if state.is_shared() && !state.opened(self.runtime.config.hook_timeout).await {
            return self.attach_failed(&Failure::Unreachable(format!(
                "the server cannot load state {id} from redis; try again later"
            )));
        }
        // Leave the old state before joining the new one, so that no update of the old
        // state can be queued after the new state's snapshot. Its self-destruct hook is
        // asked afterwards, and not at all when re-attaching to the same state.
        let previous = self.attachment.take();
        if let Some(previous) = &previous {
            previous.state.detach(previous.subscriber);
        }
        let session = request.session.map(|session| SessionKey {
            client: self.identifier.clone(),
            session,
        });
        let attached = state.attach(
            self.outbox.clone(),
            session.clone(),
            request.last_sent,
            request.accepts_ops,
        );
        if let Some(previous) = previous {
            let left_for_good = !Arc::ptr_eq(&previous.state, &state);
            self.runtime.after_detach(previous.state, left_for_good);
        }
        let subscriber = match attached {
            Ok(subscriber) => subscriber,
            Err(failure) => return self.attach_failed(&failure),
        };
        self.attachment = Some(Attachment {
            state,
            subscriber,
            session,
            last_sent: request.last_sent,
        });
    }

    async fn update_state(&mut self, request: UpdateState) {
        let UpdateState {
            updates,
            request_id,
            ops,
            if_version,
        } = request;
        let update = Update {
            set: updates,
            ops,
            expected_version: if_version,
        };
        let Some(attachment) = &self.attachment else {
            return self.fail(&Failure::NotAttached, request_id);
        };
        let state = Arc::clone(&attachment.state);
        let session = attachment.session.clone();
        let subscriber = attachment.subscriber;
        let floor = attachment.last_sent;
        let tracked = session.as_ref().zip(request_id);
        // A retry is answered before the interceptor runs again (once what it
        // answers is saved).
        if let Some((session, request_id)) = tracked
            && let Err(answer) = state.check(session, request_id)
        {
            if let Failure::Repeated(outcome) = &answer
                && let Outcome::Applied { version, .. } = outcome.as_ref()
                && let Err(failure) = self
                    .runtime
                    .saved(&state, state.pending_ticket(*version))
                    .await
            {
                return self.fail(&failure, Some(request_id));
            }
            return self.fail(&answer, Some(request_id));
        }
        // Shared through Redis, a request the session may have sent before it attached
        // here is looked up there first.
        #[cfg(feature = "redis")]
        if let (Some((session, request_id)), Some(cluster)) = (tracked, &self.runtime.cluster)
            && state.is_shared()
            && floor.is_some_and(|floor| request_id <= floor)
            && let Err(answer) = cluster.seen(&state, session, request_id, floor).await
        {
            return self.fail(&answer, Some(request_id));
        }
        let origin = Origin {
            subscriber,
            request_id,
            session: session.as_ref(),
            floor,
        };
        let client = Some(Arc::clone(&self.client));
        let applied = self
            .runtime
            .intercept_and_apply(&state, update, client, Some(origin), false)
            .await;
        if let Err(failure) = applied {
            #[cfg(feature = "redis")]
            if let (Some((session, request_id)), Some(cluster)) = (tracked, &self.runtime.cluster)
                && state.is_shared()
                && failure.is_remembered()
                && let Err(unreachable) = cluster
                    .remember(&state, session, request_id, floor, &failure)
                    .await
            {
                return self.fail(&unreachable, Some(request_id));
            }
            if let Some((session, request_id)) = tracked
                && failure.is_remembered()
                && !state.is_shared()
            {
                let ticket = state.record_failure(session, request_id, failure.clone());
                if let Err(storage) = self.runtime.saved(&state, ticket).await {
                    return self.fail(&storage, Some(request_id));
                }
            }
            self.fail(&failure, request_id);
        }
    }

    fn detach(&mut self) {
        if let Some(attachment) = self.attachment.take() {
            self.runtime.detach(attachment.state, attachment.subscriber);
        }
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
        use crate::tls::Stream;
        use tokio_tungstenite::WebSocketStream;
        type Sink = futures_util::stream::SplitSink<WebSocketStream<Stream>, Message>;
        let serve_size = future_size(serve::<()>);
        let writer_size = future_size(write_loop::<Sink>);
        assert!(serve_size <= 1024, "serve future: {serve_size} bytes");
        assert!(writer_size <= 1024, "writer future: {writer_size} bytes");
    }
}
