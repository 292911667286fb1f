//! The client's task: owns the socket, feeds the shared [`ClientCore`] the commands and
//! frames, performs what the core asks, and reconnects. The bookkeeping around the core
//! (who waits for what, when the backoff starts over) is the protocol crate's
//! ([`Waiters`], [`Reconnect`]); what is this crate's own is the socket, the timers and
//! how user code is called.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use state_sync_protocol::{
    ClientCore, ConnectionStatus, Event, JsonObject, Reconnect, Update, Waiters,
};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::client::{Applied, Shared, StateUpdate, lock};
use crate::error::{Error, Result};
use crate::transport::{self, Socket, Target};

/// A caller of `connect_to_state`.
type AttachWaiter = oneshot::Sender<Result<JsonObject>>;
/// A caller of `update_state`.
type UpdateWaiter = oneshot::Sender<Result<Applied>>;

/// What a [`Client`](crate::Client) handle asks of the driver.
pub(crate) enum Command {
    ConnectToState {
        state_identifier: String,
        reply: AttachWaiter,
    },
    Update {
        update: Update,
        reply: UpdateWaiter,
    },
    SetPresence {
        presence: JsonObject,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Why a connected period ended.
enum Ended {
    /// The connection was lost (or the server closed it): how, for the report.
    Lost(String),
    /// The application closed the client, or dropped every handle.
    Closed,
}

pub(crate) struct Driver {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// One per endpoint, in order; `reconnect` says which the next connection opens.
    targets: Vec<Target>,
    reconnect: Reconnect,
    waiters: Waiters<AttachWaiter, UpdateWaiter>,
    close_waiters: Vec<oneshot::Sender<()>>,
    /// When to call [`ClientCore::presence_due`] (see [`Event::PresenceDue`]).
    presence_due: Option<tokio::time::Instant>,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        targets: Vec<Target>,
        reconnect: Reconnect,
    ) -> Self {
        Driver {
            shared,
            commands,
            targets,
            reconnect,
            waiters: Waiters::new(),
            close_waiters: Vec::new(),
            presence_due: None,
        }
    }

    /// Runs `f` on the core. The lock is released before the events it returns are
    /// performed, so listeners may read the state.
    fn core<R>(&self, f: impl FnOnce(&mut ClientCore) -> R) -> R {
        f(&mut lock(&self.shared.core))
    }

    fn status(&self) -> ConnectionStatus {
        *self.shared.status.borrow()
    }

    fn set_status(&self, status: ConnectionStatus) {
        self.shared.status.send_replace(status);
    }

    fn report(&self, error: Error) {
        tracing::debug!("client error: {error}");
        let _ = self.shared.errors.send(error);
    }

    /// Runs until the client is closed: connected periods, then waits and reconnection
    /// attempts with backoff, each to the endpoint [`Reconnect`] says (the next one
    /// after every failure). Failures are reported as it says too: once per streak, and
    /// on giving up.
    pub(crate) async fn run(mut self, socket: Socket) {
        let mut socket = Some(socket);
        let mut last_failure = String::new();
        loop {
            if let Some(connected) = socket.take() {
                let opened = Instant::now();
                let events = self.core(ClientCore::transport_up);
                self.set_status(ConnectionStatus::Connected);
                let ended = self.connected(connected, events).await;
                let answered = self.core(|core| core.server_answered());
                let events = self.core(ClientCore::transport_down);
                let _ = self.dispatch(events);
                let how = match ended {
                    Ended::Closed => break,
                    Ended::Lost(how) => how,
                };
                last_failure = format!("the connection was lost ({how})");
                if self.reconnect.dropped(opened.elapsed(), answered) {
                    self.report(Error::Dropped(how));
                }
                self.set_status(self.status().retrying());
            }
            let Some(delay) = self.reconnect.next_delay(fastrand::f64()) else {
                if let Some(message) = self.reconnect.gave_up(&last_failure) {
                    self.report(Error::GaveUp(message));
                }
                break;
            };
            // Moved on to the next endpoint by the failure that brought us here.
            let target = self.targets[self.reconnect.endpoint()].clone();
            let attempt_connect = async move {
                tokio::time::sleep(delay).await;
                transport::connect(&target).await
            };
            let outcome = {
                tokio::pin!(attempt_connect);
                loop {
                    tokio::select! {
                        outcome = &mut attempt_connect => break Some(outcome),
                        command = self.commands.recv() => if !self.offline_command(command) { break None },
                    }
                }
            };
            match outcome {
                None => break,
                Some(Ok(connected)) => socket = Some(connected),
                Some(Err(Error::Refused { status, body })) if (400..500).contains(&status) => {
                    self.report(Error::Refused { status, body });
                    break;
                }
                Some(Err(error)) => {
                    tracing::debug!("reconnection attempt failed: {error}");
                    last_failure = error.to_string();
                    if self.reconnect.failed_to_open() {
                        self.report(error);
                    }
                }
            }
        }
        let events = self.core(ClientCore::close);
        let _ = self.dispatch(events);
        let (attaching, updating) = self.waiters.close();
        for waiter in attaching {
            let _ = waiter.send(Err(Error::Closed));
        }
        for waiter in updating {
            let _ = waiter.send(Err(Error::Closed));
        }
        self.set_status(ConnectionStatus::Closed);
        for waiter in self.close_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }

    /// Handles a command while disconnected. `false` when the client must close.
    fn offline_command(&mut self, command: Option<Command>) -> bool {
        match command {
            None => false,
            Some(Command::Close { reply }) => {
                self.close_waiters.push(reply);
                false
            }
            Some(command) => {
                // Nothing is sent while offline: the core queues it.
                let _ = self.command(command);
                true
            }
        }
    }

    /// Passes a command to the core; returns the frames to send.
    fn command(&mut self, command: Command) -> Vec<String> {
        match command {
            Command::ConnectToState {
                state_identifier,
                reply,
            } => {
                let superseded = self.waiters.attach(&state_identifier, reply);
                for waiter in superseded.waiters {
                    let _ = waiter.send(Err(Error::AttachFailed(superseded.message.clone())));
                }
                let events = self.core(|core| core.connect_to_state(&state_identifier));
                self.dispatch(events)
            }
            Command::Update { update, reply } => {
                let (request_id, events) = self.core(|core| core.submit(update));
                self.waiters.update(request_id, reply);
                self.dispatch(events)
            }
            Command::SetPresence { presence } => {
                let events = self.core(|core| core.set_presence(presence));
                self.dispatch(events)
            }
            Command::Close { reply } => {
                self.close_waiters.push(reply);
                Vec::new()
            }
        }
    }

    async fn connected(&mut self, socket: Socket, events: Vec<Event>) -> Ended {
        let (mut sink, mut stream) = socket.split();
        let mut outgoing = self.dispatch(events);
        loop {
            if !outgoing.is_empty() {
                let write = async {
                    for text in outgoing.drain(..) {
                        sink.feed(Message::text(text)).await?;
                    }
                    sink.flush().await
                };
                if let Err(e) = write.await {
                    tracing::debug!("sending failed: {e}");
                    return Ended::Lost(format!("sending failed: {e}"));
                }
            }
            let presence_due = self.presence_due;
            tokio::select! {
                () = async { tokio::time::sleep_until(presence_due.unwrap_or_else(tokio::time::Instant::now)).await }, if presence_due.is_some() => {
                    self.presence_due = None;
                    let events = self.core(ClientCore::presence_due);
                    outgoing = self.dispatch(events);
                }
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let events = self.core(|core| core.on_text(text.as_str()));
                        outgoing = self.dispatch(events);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        tracing::debug!("the server closed the connection: {frame:?}");
                        if frame.as_ref().is_some_and(|f| f.code == CloseCode::Size) {
                            let events = self.core(ClientCore::frame_too_large);
                            let _ = self.dispatch(events);
                        }
                        return Ended::Lost(describe_close(frame.as_ref()));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!("connection lost: {e}");
                        return Ended::Lost(e.to_string());
                    }
                    None => return Ended::Lost("the connection ended".to_owned()),
                },
                command = self.commands.recv() => match command {
                    None | Some(Command::Close { .. }) => {
                        if let Some(Command::Close { reply }) = command {
                            self.close_waiters.push(reply);
                        }
                        let close = CloseFrame { code: CloseCode::Normal, reason: "client closed".into() };
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            sink.send(Message::Close(Some(close))),
                        )
                        .await;
                        return Ended::Closed;
                    }
                    Some(command) => outgoing = self.command(command),
                },
            }
        }
    }

    /// Performs the core's events; returns the frames to send.
    fn dispatch(&mut self, events: Vec<Event>) -> Vec<String> {
        if events.iter().any(|event| !matches!(event, Event::Send(_))) {
            // Whoever waits for the local state to change looks again.
            self.shared.changes.send_modify(|count| *count += 1);
        }
        let mut outgoing = Vec::new();
        for event in events {
            match event {
                Event::Send(text) => outgoing.push(text),
                Event::Attached {
                    state_identifier,
                    state,
                    changes,
                } => {
                    self.reconnect.attached();
                    for waiter in self.waiters.answered(&state_identifier) {
                        let _ = waiter.send(Ok(state.clone()));
                    }
                    if let Some(changes) = changes {
                        self.notify(Arc::new(changes.updates), changes.previous);
                    }
                }
                Event::Updated { updates, previous } => self.notify(updates, previous),
                Event::Acknowledged {
                    request_id,
                    updates,
                    version,
                } => {
                    if let Some(waiter) = self.waiters.settled(request_id) {
                        let _ = waiter.send(Ok(Applied { updates, version }));
                    }
                }
                Event::Failed {
                    request_id,
                    failure,
                } => {
                    if let Some(waiter) = self.waiters.settled(request_id) {
                        let _ = waiter.send(Err(Error::Update(failure)));
                    }
                }
                Event::AttachFailed {
                    state_identifier,
                    message,
                } => {
                    let waiting = self.waiters.answered(&state_identifier);
                    if waiting.is_empty() {
                        // A re-attach after a reconnect was refused: nobody is waiting.
                        self.report(Error::AttachFailed(message.clone()));
                    }
                    for waiter in waiting {
                        let _ = waiter.send(Err(Error::AttachFailed(message.clone())));
                    }
                }
                Event::StateRemoved {
                    state_identifier,
                    message,
                } => {
                    // Callers re-attaching to it: the answer to their attach no longer
                    // counts (see `Waiters`).
                    for waiter in self.waiters.answered(&state_identifier) {
                        let _ = waiter.send(Err(Error::AttachFailed(message.clone())));
                    }
                    self.report(Error::StateRemoved(message));
                }
                Event::ServerError { message } => self.report(Error::Server(message)),
                Event::Presence(event) => {
                    let mut streams = lock(&self.shared.presence_streams);
                    streams.retain(|stream| stream.send(event.clone()).is_ok());
                }
                Event::PresenceFailed { reason, message } => {
                    self.report(Error::Presence { reason, message });
                }
                Event::PresenceDue(delay) => {
                    self.presence_due = Some(tokio::time::Instant::now() + delay);
                }
            }
        }
        outgoing
    }

    /// Calls the listeners that match and feeds the update streams.
    fn notify(&self, updates: Arc<JsonObject>, previous: JsonObject) {
        let listeners: Vec<_> = lock(&self.shared.listeners)
            .matching(&updates)
            .cloned()
            .collect();
        for listener in listeners {
            let mut listener = lock(&listener);
            if catch_unwind(AssertUnwindSafe(|| (*listener)(&updates, &previous))).is_err() {
                self.report(Error::Server("a state update listener panicked".to_owned()));
            }
        }
        let update = StateUpdate { updates, previous };
        let mut streams = lock(&self.shared.streams);
        let before = streams.len();
        streams.retain(|stream| stream.send(update.clone()).is_ok());
        if streams.len() != before {
            drop(streams);
            self.shared.refresh_observed();
        }
    }
}

/// How the server closed a connection: `close code N: reason`, as the browser tells it.
fn describe_close(frame: Option<&CloseFrame>) -> String {
    match frame {
        Some(frame) if frame.reason.is_empty() => format!("close code {}", u16::from(frame.code)),
        Some(frame) => format!("close code {}: {}", u16::from(frame.code), frame.reason),
        None => "closed without a close code".to_owned(),
    }
}
