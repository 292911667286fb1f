//! The client's task: owns the socket and the [`ClientCore`], turns commands and frames
//! into core calls, performs what the core asks, and reconnects.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use state_sync_protocol::{ClientCore, Event, JsonObject, ReconnectPolicy, apply_updates};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::client::{Applied, ConnectionStatus, Shared, StateUpdate, lock};
use crate::error::{Error, Result};
use crate::transport::{self, Socket, Target};

/// What a [`Client`](crate::Client) handle asks of the driver.
pub(crate) enum Command {
    ConnectToState {
        state_identifier: String,
        reply: oneshot::Sender<Result<JsonObject>>,
    },
    Update {
        updates: JsonObject,
        reply: oneshot::Sender<Result<Applied>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Why a connected period ended.
enum Ended {
    /// The connection was lost (or the server closed it).
    Lost,
    /// The application closed the client, or dropped every handle.
    Closed,
}

pub(crate) struct Driver {
    core: ClientCore,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    target: Target,
    policy: ReconnectPolicy,
    /// Callers of `connect_to_state`, with the state they asked for.
    attach_waiters: Vec<(String, oneshot::Sender<Result<JsonObject>>)>,
    update_waiters: HashMap<u64, oneshot::Sender<Result<Applied>>>,
    close_waiters: Vec<oneshot::Sender<()>>,
    /// Reconnection attempts since the last successful attach: a server that accepts
    /// connections and drops them at once still gets the backoff.
    attempt: u32,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        target: Target,
        policy: ReconnectPolicy,
    ) -> Self {
        Driver {
            core: ClientCore::new(uuid::Uuid::new_v4().to_string()),
            shared,
            commands,
            target,
            policy,
            attach_waiters: Vec::new(),
            update_waiters: HashMap::new(),
            close_waiters: Vec::new(),
            attempt: 0,
        }
    }

    fn set_status(&self, status: ConnectionStatus) {
        self.shared.status.send_replace(status);
    }

    fn report(&self, error: Error) {
        tracing::debug!("client error: {error}");
        let _ = self.shared.errors.send(error);
    }

    /// Runs until the client is closed: connected periods, then waits and reconnection
    /// attempts with backoff.
    pub(crate) async fn run(mut self, socket: Socket) {
        let mut socket = Some(socket);
        self.attempt = 0;
        loop {
            if let Some(connected) = socket.take() {
                if self.core.state_identifier().is_none() {
                    // Nothing to attach to: the connection itself is the success.
                    self.attempt = 0;
                }
                self.set_status(ConnectionStatus::Connected);
                let events = self.core.transport_up();
                let ended = self.connected(connected, events).await;
                let events = self.core.transport_down();
                let _ = self.dispatch(events);
                if let Ended::Closed = ended {
                    break;
                }
                self.set_status(ConnectionStatus::Reconnecting);
            }
            let attempt = self.attempt;
            let Some(delay) = self.policy.delay(attempt, fastrand::f64()) else {
                tracing::debug!("not reconnecting (attempt {attempt})");
                break;
            };
            self.attempt = attempt.saturating_add(1);
            let target = self.target.clone();
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
                    tracing::debug!("reconnection attempt {attempt} failed: {error}")
                }
            }
        }
        let events = self.core.close();
        let _ = self.dispatch(events);
        for (_, waiter) in self.attach_waiters.drain(..) {
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
                // Callers waiting for another state are answered: that attach is superseded.
                let superseded = format!("superseded by attaching to {state_identifier}");
                for (_, waiter) in self
                    .attach_waiters
                    .extract_if(.., |(id, _)| *id != state_identifier)
                {
                    let _ = waiter.send(Err(Error::AttachFailed(superseded.clone())));
                }
                let events = self.core.connect_to_state(&state_identifier);
                *lock(&self.shared.state) = self.core.state().clone();
                self.attach_waiters.push((state_identifier, reply));
                self.dispatch(events)
            }
            Command::Update { updates, reply } => {
                let (request_id, events) = self.core.update(updates);
                self.update_waiters.insert(request_id, reply);
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
                    return Ended::Lost;
                }
            }
            tokio::select! {
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        let events = self.core.on_text(text.as_str());
                        outgoing = self.dispatch(events);
                    }
                    Some(Ok(Message::Close(frame))) => {
                        tracing::debug!("the server closed the connection: {frame:?}");
                        if frame.is_some_and(|f| f.code == CloseCode::Size) {
                            let events = self.core.frame_too_large();
                            let _ = self.dispatch(events);
                        }
                        return Ended::Lost;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::debug!("connection lost: {e}");
                        return Ended::Lost;
                    }
                    None => return Ended::Lost,
                },
                command = self.commands.recv() => match command {
                    None | Some(Command::Close { .. }) => {
                        if let Some(Command::Close { reply }) = command {
                            self.close_waiters.push(reply);
                        }
                        let close = CloseFrame { code: CloseCode::Normal, reason: "client closed".into() };
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(1),
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
        let mut outgoing = Vec::new();
        for event in events {
            match event {
                Event::Send(text) => outgoing.push(text),
                Event::Attached {
                    state_identifier,
                    state,
                    changes,
                } => {
                    self.attempt = 0;
                    *lock(&self.shared.state) = state.clone();
                    let waiting = self
                        .attach_waiters
                        .extract_if(.., |(id, _)| *id == state_identifier);
                    for (_, waiter) in waiting {
                        let _ = waiter.send(Ok(state.clone()));
                    }
                    if let Some(changes) = changes.filter(|c| !c.is_empty()) {
                        self.notify(Arc::new(changes.updates), changes.previous);
                    }
                }
                Event::Updated { updates, previous } => {
                    apply_updates(&mut lock(&self.shared.state), &updates);
                    self.notify(updates, previous);
                }
                Event::Acknowledged {
                    request_id,
                    updates,
                    version,
                } => {
                    if let Some(waiter) = self.update_waiters.remove(&request_id) {
                        let _ = waiter.send(Ok(Applied { updates, version }));
                    }
                }
                Event::Failed {
                    request_id,
                    failure,
                } => {
                    if let Some(waiter) = self.update_waiters.remove(&request_id) {
                        let _ = waiter.send(Err(Error::Update(failure)));
                    }
                }
                Event::AttachFailed {
                    state_identifier,
                    message,
                } => {
                    *lock(&self.shared.state) = self.core.state().clone();
                    let waiting: Vec<_> = self
                        .attach_waiters
                        .extract_if(.., |(id, _)| *id == state_identifier)
                        .collect();
                    if waiting.is_empty() {
                        // A re-attach after a reconnect was refused: nobody is waiting.
                        self.report(Error::AttachFailed(message.clone()));
                    }
                    for (_, waiter) in waiting {
                        let _ = waiter.send(Err(Error::AttachFailed(message.clone())));
                    }
                }
                Event::StateRemoved { message, .. } => self.report(Error::StateRemoved(message)),
                Event::ServerError { message } => self.report(Error::Server(message)),
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
        lock(&self.shared.streams).retain(|stream| stream.send(update.clone()).is_ok());
    }
}
