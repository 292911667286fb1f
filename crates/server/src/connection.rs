//! One client connection: the handshake, then a reader that handles the client's
//! messages (attach, update); what it sends goes through its [`Outbox`].

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::StreamExt;
use state_sync_protocol::{
    ClientMessage, ConnectToState, FailureReason, ServerMessage, SetPresence, Update, UpdateState,
};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, error::CapacityError};

use crate::failure::{Failure, MAX_SESSIONS_PER_CONNECTION};
use crate::fanout::frame;
use crate::handshake::{self, Upgraded};
use crate::hooks::run_hook;
use crate::outbox::{Closer, Outbox, corked};
use crate::presence::{Joining, Membership, PresenceRefusal};
use crate::runtime::Runtime;
use crate::session_log::{Outcome, SessionKey};
use crate::state::{Origin, State};
use crate::wire::{Duplex, Halves};

/// How long a closing connection may take to send what is queued and its close frame.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

struct Attachment<K> {
    state: Arc<State<K>>,
    subscriber: usize,
    session: Option<SessionKey>,
    /// The highest request id the session sent before it attached, when it said.
    last_sent: Option<u64>,
    /// Its entry in the state's presence.
    presence: Option<Membership>,
}

struct Connection<K> {
    runtime: Arc<Runtime<K>>,
    /// The session ids this connection attached with (at most
    /// [`MAX_SESSIONS_PER_CONNECTION`]).
    sessions: Vec<String>,
    client: Arc<K>,
    identifier: Arc<str>,
    /// Its id among the server's connections.
    id: u64,
    /// Its presence updates: the rate limit's tokens, and when they were counted.
    presence_tokens: (f32, std::time::Instant),
    outbox: Outbox,
    closer: Arc<Closer>,
    attachment: Option<Attachment<K>>,
    /// Its updates sent to Redis and not answered yet.
    #[cfg(feature = "redis")]
    in_flight: InFlight,
}

/// A connection's updates sent to Redis and not answered yet: at most
/// [`MAX_IN_FLIGHT`]; past that the connection reads nothing more until one is.
/// Each is sent with the request id of the one before it still in flight, which
/// Redis must have answered first (so an update whose predecessor never reached Redis
/// is not applied either); once one failed for want of Redis, nothing more is sent
/// (the connection is being closed, and its client resends them in order).
/// Made on its first use: a connection that never updates a shared state holds
/// none.
#[cfg(feature = "redis")]
struct InFlight(std::sync::OnceLock<Arc<InFlightState>>);

#[cfg(feature = "redis")]
struct InFlightState {
    permits: tokio::sync::Semaphore,
    /// The request id of the last update sent and not answered yet, and whether one
    /// failed for want of Redis.
    last: std::sync::Mutex<(Option<u64>, bool)>,
}

/// Most updates of one connection in flight to Redis.
#[cfg(feature = "redis")]
const MAX_IN_FLIGHT: u32 = 64;

#[cfg(feature = "redis")]
impl InFlight {
    fn new() -> Self {
        InFlight(std::sync::OnceLock::new())
    }

    fn state(&self) -> &Arc<InFlightState> {
        self.0.get_or_init(|| {
            Arc::new(InFlightState {
                permits: tokio::sync::Semaphore::new(MAX_IN_FLIGHT as usize),
                last: std::sync::Mutex::new((None, false)),
            })
        })
    }

    fn last(&self) -> std::sync::MutexGuard<'_, (Option<u64>, bool)> {
        self.state()
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Room for one more (its permit is given back by [`InFlight::answered`]), and
    /// the request id of the update before it still in flight; `Err` once one failed
    /// for want of Redis.
    async fn enter(&self) -> Result<Option<u64>, ()> {
        if let Ok(permit) = self.state().permits.acquire().await {
            permit.forget();
        }
        let (last, failed) = *self.last();
        if failed { Err(()) } else { Ok(last) }
    }

    /// The room taken by [`InFlight::enter`] is not used.
    fn unused(&self) {
        self.state().permits.add_permits(1);
    }

    /// An update with this request id was sent.
    fn sent(&self, request_id: Option<u64>) {
        if request_id.is_some() {
            self.last().0 = request_id;
        }
    }

    /// An update was answered (`failed`: for want of Redis).
    fn answered(state: &InFlightState, request_id: Option<u64>, failed: bool) {
        let mut last = state
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.1 |= failed;
        if request_id.is_some() && last.0 == request_id {
            last.0 = None;
        }
        drop(last);
        state.permits.add_permits(1);
    }

    /// Waits until every update in flight was answered; `false` when one failed for
    /// want of Redis.
    async fn settled(&self) -> bool {
        let _ = self.state().permits.acquire_many(MAX_IN_FLIGHT).await;
        !self.last().1
    }
}

/// Tells a client why its request did nothing (when the protocol says anything). When
/// Redis cannot be reached, its connection is closed instead, so that it reconnects
/// and retries.
fn fail(outbox: &Outbox, closer: &Closer, failure: &Failure, request_id: Option<u64>) {
    #[cfg(feature = "redis")]
    if let Failure::Unreachable(why) = failure {
        tracing::warn!("closing a connection: {why}");
        closer.close(CloseCode::from(crate::cluster::UNREACHABLE_CLOSE_CODE), why);
        return;
    }
    let _ = closer;
    if let Some(reason) = failure.update_reason() {
        crate::metrics::update_refused(reason);
    }
    if let Some(reply) = failure.reply(request_id) {
        outbox.push(reply);
    }
}

/// Serves one accepted TCP connection until it closes or the server shuts down.
pub(crate) async fn serve<K: Send + Sync + 'static>(
    runtime: Arc<Runtime<K>>,
    tcp: TcpStream,
    remote_addr: SocketAddr,
    closer: Arc<Closer>,
) {
    // Boxed: the handshake's state (hyper's buffers, a download's) lives only while it
    // runs, not in every connection's task for its whole life.
    let Some(Upgraded {
        halves,
        client,
        identifier,
    }) = Box::pin(handshake::perform(&runtime, tcp, remote_addr, &closer)).await
    else {
        return;
    };
    // Boxed: the handshake's leftovers are not kept beside it.
    Box::pin(run(
        runtime,
        halves,
        client,
        identifier,
        closer,
        remote_addr,
    ))
    .await;
}

/// Runs an upgraded connection (from this server's listener, or mounted in an app's
/// router) until it closes or the server shuts down. Corked: the frames its updates
/// queue for other connections are written when it waits (see [`crate::outbox`]).
pub(crate) async fn run<K>(
    runtime: Arc<Runtime<K>>,
    halves: Halves,
    client: Arc<K>,
    identifier: String,
    closer: Arc<Closer>,
    remote_addr: SocketAddr,
) where
    K: Send + Sync + 'static,
{
    tracing::debug!(%remote_addr, %identifier, "client connected");
    let identifier: Arc<str> = identifier.into();
    let registration = runtime.register(&identifier, &closer);
    let Halves {
        read,
        write,
        leftover,
    } = halves;
    let outbox = Outbox::new(
        runtime.config.outgoing_queue,
        runtime.config.outgoing_queue_bytes,
        Arc::clone(&closer),
        write,
        runtime.config.write_timeout,
    );
    let mut connection = Connection {
        runtime: Arc::clone(&runtime),
        sessions: Vec::new(),
        client,
        identifier,
        id: registration,
        presence_tokens: (
            runtime.config.presence.rate as f32,
            std::time::Instant::now(),
        ),
        outbox: outbox.clone(),
        closer: Arc::clone(&closer),
        attachment: None,
        #[cfg(feature = "redis")]
        in_flight: InFlight::new(),
    };
    corked(async {
        let duplex = Duplex {
            read,
            outbox: outbox.clone(),
        };
        let config = runtime.config.websocket_config();
        // Boxed: its state is not kept beside the connection's for its whole life.
        let mut ws = Box::pin(WebSocketStream::from_partially_read(
            duplex,
            leftover,
            Role::Server,
            Some(config),
        ))
        .await;
        tokio::select! {
            closed = connection.read_loop(&mut ws) => {
                // The client closed, or its stream failed.
                connection.detach(!closed);
                closer.close(CloseCode::Normal, "");
            }
            // Overflow, an oversized frame, a lost connection, or shutdown: leave the
            // state at once.
            () = closer.token().cancelled() => connection.detach(closer.is_lost()),
        }
        // Nothing more is queued for it, so it never sees a gap in what it receives.
        outbox.refuse();
        if !closer.is_lost() {
            // What is queued, then the close frame (or the echo of the client's),
            // within a moment: the client may not read.
            let close = async {
                if ws.close(Some(closer.frame())).await.is_err() {
                    let _ = futures_util::SinkExt::close(&mut ws).await;
                }
                outbox.emptied().await;
            };
            // Boxed: only a closing connection carries its state.
            let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, close)).await;
        }
    })
    .await;
    outbox.finish();
    runtime.unregister(registration);
    tracing::debug!(%remote_addr, identifier = %connection.identifier, "client disconnected");
}

impl<K: Send + Sync + 'static> Connection<K> {
    /// Handles the client's messages until it closes (`true`: it sent a close frame)
    /// or its stream fails or ends without one (`false`).
    async fn read_loop<S>(&mut self, mut source: S) -> bool
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
                return false;
            };
            // Boxed, and awaited once the message is dropped: an idle connection's task
            // carries neither their state nor room for a message.
            let work: Option<std::pin::Pin<Box<dyn Future<Output = ()> + Send + '_>>> = match item {
                Ok(Message::Text(text)) => match ClientMessage::from_json(text.as_str()) {
                    Ok(ClientMessage::ConnectToState(request)) => {
                        Some(Box::pin(self.connect_to_state(request)))
                    }
                    Ok(ClientMessage::UpdateState(request)) => {
                        Some(Box::pin(self.update_state(request)))
                    }
                    Ok(ClientMessage::SetPresence(request)) => {
                        self.set_presence(request);
                        None
                    }
                    Err(error) => {
                        tracing::debug!("invalid message from a client: {error}");
                        // A refused attach (8) leaves the connection attached to
                        // nothing, whatever refused it.
                        if matches!(error.reply(), ServerMessage::StateConnectionError { .. }) {
                            self.detach(false);
                        }
                        self.reply(error.reply());
                        None
                    }
                },
                Ok(Message::Binary(_)) => {
                    self.reply(&ServerMessage::update_failed(
                        "Invalid message: binary frames are not supported; send JSON text frames",
                        FailureReason::Invalid,
                        None,
                    ));
                    None
                }
                Ok(Message::Close(_)) => return true,
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => None,
                Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => {
                    tracing::debug!("a client sent a frame of {size} bytes (maximum {max_size})");
                    self.reply(&ServerMessage::update_failed(
                        format!("Invalid message: a frame of {size} bytes exceeds the maximum of {max_size} bytes"),
                        FailureReason::Invalid,
                        None,
                    ));
                    self.closer.close(CloseCode::Size, "message too big");
                    return true;
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
                    return false;
                }
            };
            if let Some(work) = work {
                work.await;
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
        // Nothing more of this connection may reach Redis: its client resends this
        // update and the later ones, in order, on its next connection.
        #[cfg(feature = "redis")]
        if matches!(failure, Failure::Unreachable(_)) {
            self.in_flight.last().1 = true;
        }
        fail(&self.outbox, &self.closer, failure, request_id);
    }

    /// A failed attach leaves the connection attached to nothing, as in the original
    /// (and as our clients assume): the previous state's updates stop coming.
    fn attach_failed(&mut self, failure: &Failure) {
        self.detach(false);
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
        let user = match state.hooks.public_identity.clone() {
            None => serde_json::Value::String(self.identifier.to_string()),
            Some(identity) => {
                let (client, identifier) = (Arc::clone(&self.client), Arc::clone(&self.identifier));
                let limit = self.runtime.config.hook_timeout;
                match run_hook("public_identity", limit, move || {
                    identity(&identifier, &client)
                })
                .await
                {
                    Ok(user) => user,
                    Err(cause) => {
                        return self
                            .attach_failed(&Failure::IdentityHookFailed { state: id, cause });
                    }
                }
            }
        };
        // Shared through Redis, the state is attached once it is loaded from there.
        if state.is_shared() && !state.opened(self.runtime.config.hook_timeout).await {
            return self.attach_failed(&Failure::Unreachable(format!(
                "the server cannot load state {id} from redis; try again later"
            )));
        }
        // Shared through Redis, the session's outcomes are kept there from now on.
        #[cfg(feature = "redis")]
        if let (Some(cluster), Some(session)) = (
            self.runtime.cluster.as_ref().filter(|_| state.is_shared()),
            &request.session,
        ) {
            let key = SessionKey {
                client: self.identifier.to_string(),
                session: session.clone(),
            };
            if let Err(failure) = cluster.attached(&state, &key, request.last_sent).await {
                return self.attach_failed(&failure);
            }
        }
        // Shared through Redis, the other servers count this client before it is
        // attached (their self-destruct hooks count every server's clients).
        #[cfg(feature = "redis")]
        if let Some(cluster) = self.runtime.cluster.as_ref().filter(|_| state.is_shared())
            && !cluster.say_clients(&state.id, state.clients() + 1).await
        {
            return self.attach_failed(&Failure::Unreachable(format!(
                "the server cannot tell redis about a client of state {id}; try again later"
            )));
        }
        // Leave the old state before joining the new one, so that no update of the old
        // state can be queued after the new state's snapshot. Its self-destruct hook is
        // asked afterwards, and not at all when re-attaching to the same state.
        let previous = self.attachment.take();
        // Re-attaching to the same state, the connection keeps its presence entry (its
        // session takes it back below): the others see no leave and join.
        let mut kept = None;
        if let Some(previous) = &previous {
            previous.state.detach(previous.subscriber);
            if let Some(membership) = &previous.presence {
                if Arc::ptr_eq(&previous.state, &state) {
                    kept = Some(membership.clone());
                } else {
                    previous.state.presence.leave(membership, false);
                }
            }
        }
        let session = request.session.map(|session| SessionKey {
            client: self.identifier.to_string(),
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
            Err(failure) => {
                if let Some(kept) = &kept {
                    state.presence.leave(kept, false);
                }
                return self.attach_failed(&failure);
            }
        };
        let watches = request.presence.is_some();
        let mut presence = request.presence.unwrap_or_default();
        if let Err(refusal) = self.presence_fits(&presence) {
            self.reply(&refusal.reply());
            presence = state_sync_protocol::JsonObject::new();
        }
        // A public identity over the limit is never shown (it would make every
        // snapshot as large as it likes).
        let max = self.runtime.config.presence.max_bytes;
        let hidden = json_size(&user, max) > max;
        let membership = state.presence.join(Joining {
            connection: self.id,
            identifier: Arc::clone(&self.identifier),
            session: session.clone(),
            user,
            presence,
            outbox: self.outbox.clone(),
            watches,
            hidden,
        });
        // Every attach that asked for presence gets its PRESENCE (clients count them),
        // even when the state was removed meanwhile (then it is empty; its removal is
        // on its way).
        if watches && membership.is_none() {
            self.reply(&ServerMessage::Presence(
                state_sync_protocol::PresenceSnapshot {
                    state_identifier: state.id.clone(),
                    own: String::new(),
                    others: Vec::new(),
                },
            ));
        }
        // Told at once when it is not shown (the state is full, or its identity too
        // large), when it said what it is doing.
        if watches
            && let Some(membership) = membership.as_ref().filter(|m| !m.shown)
            && let Some(refusal) = state.presence.refusal(membership)
        {
            self.reply(&refusal.reply());
        }
        if let Some(kept) = kept
            && membership.as_ref().is_none_or(|m| m.entry != kept.entry)
        {
            // Not taken back (another session, or none): it leaves.
            state.presence.leave(&kept, false);
        }
        self.attachment = Some(Attachment {
            state,
            subscriber,
            session,
            last_sent: request.last_sent,
            presence: membership,
        });
    }

    /// A presence within the size limit.
    fn presence_fits(
        &self,
        presence: &state_sync_protocol::JsonObject,
    ) -> Result<(), PresenceRefusal> {
        let max = self.runtime.config.presence.max_bytes;
        // Counted without building the text: a writer that stops past the limit.
        let size = json_size(presence, max);
        if size > max {
            return Err(PresenceRefusal::TooLarge { size, max });
        }
        Ok(())
    }

    fn set_presence(&mut self, request: SetPresence) {
        // The rate limit is the connection's: attaching again does not reset it.
        let rate = self.runtime.config.presence.rate;
        let (tokens, counted) = &mut self.presence_tokens;
        let now = std::time::Instant::now();
        let elapsed = now.saturating_duration_since(*counted).as_secs_f32();
        *tokens = (*tokens + elapsed * rate as f32).min(rate as f32);
        *counted = now;
        if *tokens < 1.0 {
            return self.reply(&PresenceRefusal::RateLimited { rate }.reply());
        }
        *tokens -= 1.0;
        let result = match &self.attachment {
            None => Err(PresenceRefusal::NotAttached),
            Some(attachment) => match &attachment.presence {
                None => Err(PresenceRefusal::NotAttached),
                Some(membership) => self
                    .presence_fits(&request.presence)
                    .and_then(|()| attachment.state.presence.set(membership, request.presence)),
            },
        };
        if let Err(refusal) = result {
            self.reply(&refusal.reply());
        }
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
        #[cfg(feature = "redis")]
        if let Some(cluster) = self.runtime.cluster.clone().filter(|_| state.is_shared()) {
            let origin = (subscriber, floor);
            return Box::pin(self.update_shared(&cluster, &state, update, origin, tracked)).await;
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
            if let Some((session, request_id)) = tracked
                && failure.is_remembered()
            {
                let ticket = state.record_failure(session, request_id, failure.clone());
                if let Err(storage) = self.runtime.saved(&state, ticket).await {
                    return self.fail(&storage, Some(request_id));
                }
            }
            self.fail(&failure, request_id);
        }
    }

    /// An update of a state shared through Redis: a retry of a request the session
    /// may have sent before it attached here is looked up there; then the interceptor
    /// runs, and an update that does not read the state is sent without waiting for
    /// Redis (its answer comes in a task of its own; the connection's order is kept,
    /// and several of its updates share a round trip); one that reads the state waits
    /// for the connection's updates in flight, then for its own outcome.
    #[cfg(feature = "redis")]
    async fn update_shared(
        &mut self,
        cluster: &Arc<crate::cluster::Cluster>,
        state: &Arc<State<K>>,
        update: Update,
        (subscriber, floor): (usize, Option<u64>),
        tracked: Option<(&SessionKey, u64)>,
    ) {
        let request_id = tracked.map(|(_, id)| id);
        let earlier_failed = || {
            Failure::Unreachable(
                "an earlier update of this connection did not reach redis; try again later".into(),
            )
        };
        if self.in_flight.last().1 {
            return self.fail(&earlier_failed(), request_id);
        }
        if let Some((session, request_id)) = tracked
            && floor.is_some_and(|floor| request_id <= floor)
        {
            if !self.in_flight.settled().await {
                return self.fail(&earlier_failed(), Some(request_id));
            }
            if let Err(answer) = cluster.seen(state, session, request_id, floor).await {
                return self.fail(&answer, Some(request_id));
            }
        }
        let client = Some(Arc::clone(&self.client));
        let failure = match self.runtime.intercept(state, update, client).await {
            Err(failure) => failure,
            Ok(update) => {
                let sender = tracked.map(|(session, request_id)| (session, request_id, floor));
                let echo = request_id.map(|request_id| (subscriber, request_id));
                let Ok(after) = self.in_flight.enter().await else {
                    self.in_flight.unused();
                    return self.fail(&earlier_failed(), request_id);
                };
                let after = after.filter(|_| tracked.is_some());
                let done: crate::cluster::Done = {
                    let (outbox, closer) = (self.outbox.clone(), Arc::clone(&self.closer));
                    let in_flight = Arc::clone(self.in_flight.state());
                    Box::new(move |result| {
                        let unreachable = matches!(result, Err(Failure::Unreachable(_)));
                        InFlight::answered(&in_flight, request_id, unreachable);
                        match result {
                            Ok(_) => crate::metrics::update_applied(),
                            Err(failure) => fail(&outbox, &closer, &failure, request_id),
                        }
                    })
                };
                match cluster.send(state, &update, sender, after, echo, done) {
                    Ok(true) => {
                        self.in_flight.sent(request_id);
                        return;
                    }
                    Ok(false) => {
                        self.in_flight.unused();
                        if !self.in_flight.settled().await {
                            return self.fail(&earlier_failed(), request_id);
                        }
                        match cluster.apply(state, &update, sender, echo, false).await {
                            Ok(_) => {
                                crate::metrics::update_applied();
                                return;
                            }
                            Err(failure) => failure,
                        }
                    }
                    Err(failure) => {
                        self.in_flight.unused();
                        failure
                    }
                }
            }
        };
        if let Some((session, request_id)) = tracked
            && failure.is_remembered()
        {
            if !self.in_flight.settled().await {
                return self.fail(&earlier_failed(), Some(request_id));
            }
            if let Err(unreachable) = cluster
                .remember(state, session, request_id, floor, &failure)
                .await
            {
                return self.fail(&unreachable, Some(request_id));
            }
        }
        self.fail(&failure, request_id);
    }

    /// Leaves the attached state (`lost`: the connection failed, so its presence
    /// lingers for the grace period).
    fn detach(&mut self, lost: bool) {
        if let Some(attachment) = self.attachment.take() {
            if let Some(membership) = &attachment.presence {
                attachment.state.presence.leave(membership, lost);
            }
            self.runtime.detach(attachment.state, attachment.subscriber);
        }
    }
}

/// The length of `value` as JSON text, counted up to a little past `max`.
fn json_size(value: &impl serde::Serialize, max: usize) -> usize {
    struct Counter {
        bytes: usize,
        max: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.max {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { bytes: 0, max };
    let _ = serde_json::to_writer(&mut counter, value);
    counter.bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn future_size_6<A, B, C, D, E, G, F>(_: fn(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every connection's task holds these futures for its whole life (`serve`, and
    /// the `run` it boxes): keep the handshake and message handling boxed (see `serve`
    /// and `read_loop`).
    #[test]
    fn connection_tasks_stay_small() {
        let serve_size = future_size(serve::<()>);
        let run_size = future_size_6(run::<()>);
        assert!(serve_size <= 1024, "serve future: {serve_size} bytes");
        assert!(run_size <= 1280, "run future: {run_size} bytes");
    }
}
