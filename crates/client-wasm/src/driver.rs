//! What drives the exported `Client`: the WebSocket and its handlers, the timers (the
//! next reconnection, the next presence send), and the [`ClientCore`] whose events it
//! performs.
//!
//! The bookkeeping around the core is the protocol crate's, shared with the native
//! client: who waits for what ([`Waiters`]), when the backoff starts over
//! ([`Reconnect`]), listeners by identifier ([`Listeners`]) and the status names. What
//! is this crate's own is the browser's socket and timers, and how JavaScript is called:
//! callbacks are queued as [`Effects`] and run once the client's state is no longer
//! borrowed, so that they may call back into the client.

use std::cell::RefCell;
use std::rc::Weak;
use std::time::Duration;

use js_sys::{Array, Function, Promise};
use state_sync_protocol::{
    ClientCore, ConnectionStatus, Event, JsonObject, Listeners, Reconnect, ReconnectPolicy, Update,
    Waiters,
};
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::convert::{applied, error, reason_name, to_js, update_error};
use crate::presence::PresenceView;
use crate::timer::Timer;

/// JavaScript functions to call once the `RefCell` borrow is released, with their
/// arguments.
pub(crate) type Effects = Vec<(Function, Vec<JsValue>)>;

/// A promise's `resolve` and `reject` functions.
pub(crate) type Settle = (Function, Function);

/// The socket and the handlers it holds; dropping it detaches and closes it.
struct Socket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(web_sys::Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code_and_reason(1000, "client closed");
    }
}

/// The client's state, shared by the exported `Client` and the socket's handlers.
pub(crate) struct Inner {
    this: Weak<RefCell<Inner>>,
    pub(crate) core: ClientCore,
    /// The URL of each endpoint, in order (at least one); `reconnect` says which the
    /// next connection opens.
    urls: Vec<String>,
    /// The same URLs without their query (which holds the token), for error messages.
    endpoints: Vec<String>,
    reconnect: Reconnect,
    socket: Option<Socket>,
    /// When the current socket opened (`Date.now()`), `None` until it does.
    opened_at: Option<f64>,
    /// What went wrong last, for the report when the client gives up.
    last_failure: String,
    /// The next reconnection.
    timer: Option<Timer>,
    /// The next presence send (see [`Event::PresenceDue`]).
    presence_timer: Option<Timer>,
    /// Presence as JavaScript sees it.
    pub(crate) presence: PresenceView,
    pub(crate) status: ConnectionStatus,
    pub(crate) listeners: Listeners<Function>,
    pub(crate) status_listeners: Listeners<Function>,
    pub(crate) error_listeners: Listeners<Function>,
    /// Callers of `onConnection`.
    pub(crate) connection_waiters: Vec<Settle>,
    /// Callers of `onError` (their `resolve`).
    pub(crate) error_waiters: Vec<Function>,
    /// Callers of `connectToState` and `updateState`.
    waiters: Waiters<Settle, Settle>,
    /// Functional updates waiting for the local state or the connection to change
    /// (their `resolve`): woken by every change, they look again (see `functional`).
    change_waiters: Vec<Function>,
}

/// Calls the queued JavaScript functions; one that throws is logged.
fn run(effects: Effects) {
    for (function, arguments) in effects {
        let arguments: Array = arguments.into_iter().collect();
        if let Err(thrown) = function.apply(&JsValue::NULL, &arguments) {
            web_sys::console::error_2(&"server-state-sync: a callback threw".into(), &thrown);
        }
    }
}

/// Runs `f` on the client's state if it still exists, then the JavaScript callbacks it
/// queued, outside the borrow. `None` when the client is gone.
pub(crate) fn with_inner<R>(
    this: &Weak<RefCell<Inner>>,
    f: impl FnOnce(&mut Inner, &mut Effects) -> R,
) -> Option<R> {
    let inner = this.upgrade()?;
    let mut effects = Vec::new();
    let result = match inner.try_borrow_mut() {
        Ok(mut inner) => f(&mut inner, &mut effects),
        // Re-entered from a callback; cannot happen since callbacks run after the borrow.
        Err(_) => return None,
    };
    run(effects);
    Some(result)
}

/// A promise; `register` gets its `resolve` and `reject` functions at once.
pub(crate) fn new_promise(register: impl FnOnce(Function, Function)) -> Promise {
    let mut register = Some(register);
    Promise::new(&mut |resolve, reject| {
        if let Some(register) = register.take() {
            register(resolve, reject);
        }
    })
}

/// Queues `update` on the client behind `this`: a promise of `{updates, version}`,
/// rejected with a reason (`"closed"` when the client is closed or gone).
pub(crate) fn submit(this: &Weak<RefCell<Inner>>, update: Update) -> Promise {
    new_promise(|resolve, reject| {
        let queued = with_inner(this, |inner, effects| {
            if inner.status == ConnectionStatus::Closed {
                effects.push((
                    reject.clone(),
                    vec![error("the client is closed", "closed")],
                ));
            } else {
                inner.submit(update, (resolve, reject.clone()), effects);
            }
        });
        if queued.is_none() {
            let _ = reject.call1(&JsValue::NULL, &error("the client is closed", "closed"));
        }
    })
}

impl Inner {
    /// A client that has not opened its socket yet ([`Inner::open`] does).
    pub(crate) fn new(
        this: Weak<RefCell<Inner>>,
        session: String,
        urls: Vec<String>,
        policy: ReconnectPolicy,
    ) -> Self {
        Inner {
            this,
            // Nobody listens yet (see `refresh_observed`).
            core: {
                let mut core = ClientCore::new(session);
                core.set_observed(false);
                core
            },
            endpoints: urls
                .iter()
                .map(|url| url.split('?').next().unwrap_or_default().to_owned())
                .collect(),
            reconnect: Reconnect::with_endpoints(policy, urls.len()),
            urls,
            socket: None,
            opened_at: None,
            last_failure: String::new(),
            timer: None,
            presence_timer: None,
            presence: PresenceView::default(),
            status: ConnectionStatus::Connecting,
            listeners: Listeners::new(),
            status_listeners: Listeners::new(),
            error_listeners: Listeners::new(),
            connection_waiters: Vec::new(),
            error_waiters: Vec::new(),
            waiters: Waiters::new(),
            change_waiters: Vec::new(),
        }
    }

    /// Tells the core whether anybody listens to state updates: without, atomic
    /// appends are applied to the local arrays in place, not copied for nobody.
    pub(crate) fn refresh_observed(&mut self) {
        self.core.set_observed(!self.listeners.is_empty());
    }

    /// Waits for the next change of the local state, the connection or the status:
    /// `resolve` is called then (or when the client closes).
    pub(crate) fn on_next_change(&mut self, resolve: Function) {
        self.change_waiters.push(resolve);
    }

    /// Wakes whoever waits for a change (see [`Inner::on_next_change`]).
    fn changed(&mut self, effects: &mut Effects) {
        for resolve in self.change_waiters.drain(..) {
            effects.push((resolve, vec![]));
        }
    }

    /// The endpoint the next connection opens, or the current one was opened to: the
    /// failure that ends it moves on to the next (see [`Reconnect`]). Without its query.
    fn endpoint(&self) -> &str {
        self.endpoints
            .get(self.reconnect.endpoint())
            .map_or("", String::as_str)
    }

    /// Opens the WebSocket to the endpoint [`Reconnect`] says, and registers its
    /// handlers.
    pub(crate) fn open(&mut self, effects: &mut Effects) {
        self.opened_at = None;
        let url = self
            .urls
            .get(self.reconnect.endpoint())
            .map_or("", String::as_str);
        let ws = match WebSocket::new(url) {
            Ok(ws) => ws,
            Err(thrown) => {
                let message = thrown
                    .dyn_ref::<js_sys::Error>()
                    .map(|error| String::from(error.message()))
                    .or_else(|| thrown.as_string())
                    .unwrap_or_else(|| "the browser refused to open it".into());
                self.last_failure = format!(
                    "could not open a connection to {}: {message}",
                    self.endpoint()
                );
                if self.reconnect.failed_to_open() {
                    let report = self.last_failure.clone();
                    self.report(&report, "connect", effects);
                }
                self.connection_lost(effects);
                return;
            }
        };
        let this = self.this.clone();
        let on_open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
            with_inner(&this, |inner, effects| inner.on_open(effects));
        });
        let this = self.this.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            if let Some(text) = event.data().as_string() {
                with_inner(&this, |inner, effects| {
                    let events = inner.core.on_text(&text);
                    inner.dispatch(events, effects);
                });
            }
        });
        let this = self.this.clone();
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |event: CloseEvent| {
            with_inner(&this, |inner, effects| inner.on_close(&event, effects));
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        self.socket = Some(Socket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        });
    }

    fn set_status(&mut self, status: ConnectionStatus, effects: &mut Effects) {
        if self.status == status {
            return;
        }
        self.status = status;
        self.changed(effects);
        for listener in self.status_listeners.iter() {
            effects.push((listener.clone(), vec![status.as_str().into()]));
        }
    }

    fn on_open(&mut self, effects: &mut Effects) {
        self.opened_at = Some(js_sys::Date::now());
        self.set_status(ConnectionStatus::Connected, effects);
        for (resolve, _) in self.connection_waiters.drain(..) {
            effects.push((resolve, vec![]));
        }
        let events = self.core.transport_up();
        self.dispatch(events, effects);
    }

    /// The socket closed: it never opened (refused or unreachable), or it was lost.
    /// The first failure of a streak is reported (see [`Reconnect`]).
    fn on_close(&mut self, event: &CloseEvent, effects: &mut Effects) {
        if event.code() == 1009 {
            // The server found a frame too large: fail that update, do not resend it.
            let events = self.core.frame_too_large();
            self.dispatch(events, effects);
        }
        self.socket = None;
        let report: Option<String> = match self.opened_at.take() {
            // The browser tells nothing more than code 1006 before `open`, whether the
            // server refused the upgrade (a bad token: HTTP 401) or is down.
            None => {
                self.last_failure = format!(
                    "could not open a connection to {} (refused or unreachable; the browser \
                     does not say which)",
                    self.endpoint()
                );
                self.reconnect
                    .failed_to_open()
                    .then(|| self.last_failure.clone())
            }
            Some(opened_at) => {
                let lived = Duration::try_from_secs_f64((js_sys::Date::now() - opened_at) / 1e3)
                    .unwrap_or_default();
                let how = match (event.code(), event.reason()) {
                    (code, reason) if reason.is_empty() => format!("close code {code}"),
                    (code, reason) => format!("close code {code}: {reason}"),
                };
                self.last_failure = format!("the connection was lost ({how})");
                self.reconnect
                    .dropped(lived, self.core.server_answered())
                    .then(|| format!("the server closed the connection before answering ({how})"))
            }
        };
        if let Some(message) = report {
            self.report(&message, "connect", effects);
        }
        self.connection_lost(effects);
    }

    fn connection_lost(&mut self, effects: &mut Effects) {
        if self.status == ConnectionStatus::Closed {
            return;
        }
        let events = self.core.transport_down();
        self.dispatch(events, effects);
        match self.reconnect.next_delay(js_sys::Math::random()) {
            Some(delay) => {
                self.set_status(self.status.retrying(), effects);
                self.schedule(delay, effects);
            }
            None => match self.reconnect.gave_up(&self.last_failure) {
                Some(message) => {
                    self.report(&message, "connect", effects);
                    self.shut_down(&message, effects);
                }
                None => self.shut_down("the connection was lost and reconnecting is off", effects),
            },
        }
    }

    fn schedule(&mut self, delay: Duration, effects: &mut Effects) {
        self.timer = Timer::start(&self.this, delay, |inner, effects| {
            inner.timer = None;
            if inner.status != ConnectionStatus::Closed {
                inner.open(effects);
            }
        });
        if self.timer.is_none() {
            self.shut_down("cannot schedule a reconnection outside a window", effects);
        }
    }

    /// Closes for good: pending updates and waiters fail.
    pub(crate) fn shut_down(&mut self, why: &str, effects: &mut Effects) {
        if self.status == ConnectionStatus::Closed {
            return;
        }
        self.socket = None;
        self.timer = None;
        self.presence_timer = None;
        let events = self.core.close();
        self.dispatch(events, effects);
        let (attaching, updating) = self.waiters.close();
        let waiting = attaching.into_iter().chain(updating);
        for (_, reject) in waiting.chain(self.connection_waiters.drain(..)) {
            effects.push((reject, vec![error(why, "closed")]));
        }
        let closed = error(why, "closed");
        for resolve in self.error_waiters.drain(..) {
            effects.push((resolve, vec![closed.clone()]));
        }
        self.set_status(ConnectionStatus::Closed, effects);
    }

    /// Attaches to a state; `settle` hears the answer.
    pub(crate) fn connect_to_state(
        &mut self,
        state_identifier: &str,
        settle: Settle,
        effects: &mut Effects,
    ) {
        let superseded = self.waiters.attach(state_identifier, settle);
        for (_, reject) in superseded.waiters {
            effects.push((reject, vec![error(&superseded.message, "attachFailed")]));
        }
        let events = self.core.connect_to_state(state_identifier);
        self.dispatch(events, effects);
    }

    /// Queues an update; `settle` hears its outcome.
    pub(crate) fn submit(&mut self, update: Update, settle: Settle, effects: &mut Effects) {
        let (request_id, events) = self.core.submit(update);
        self.waiters.update(request_id, settle);
        self.dispatch(events, effects);
    }

    fn report(&mut self, message: &str, reason: &str, effects: &mut Effects) {
        let value = error(message, reason);
        for resolve in self.error_waiters.drain(..) {
            effects.push((resolve, vec![value.clone()]));
        }
        for listener in self.error_listeners.iter() {
            effects.push((listener.clone(), vec![value.clone()]));
        }
    }

    fn notify(&self, updates: &JsonObject, previous: &JsonObject, effects: &mut Effects) {
        let mut matching = self.listeners.matching(updates).peekable();
        if matching.peek().is_none() {
            return;
        }
        let (updates_js, previous_js) = (to_js(updates), to_js(previous));
        for listener in matching {
            effects.push((
                listener.clone(),
                vec![updates_js.clone(), previous_js.clone()],
            ));
        }
    }

    /// Sets this client's presence (the core sends it when it can).
    pub(crate) fn set_presence(&mut self, presence: JsonObject, effects: &mut Effects) {
        if presence != *self.core.my_presence() {
            self.presence.mine_changed();
            let events = self.core.set_presence(presence);
            self.dispatch(events, effects);
        }
    }

    /// Performs the core's events, and queues the JavaScript callbacks they call for.
    fn dispatch(&mut self, events: Vec<Event>, effects: &mut Effects) {
        let state_changed = events.iter().any(|event| {
            !matches!(
                event,
                Event::Send(_)
                    | Event::Presence(_)
                    | Event::PresenceFailed { .. }
                    | Event::PresenceDue(_)
            )
        });
        if state_changed {
            // Attached, updated, settled or detached: functional updates look again.
            self.changed(effects);
        }
        let mut presence = Vec::new();
        for event in events {
            match event {
                Event::Send(text) => {
                    if let Some(socket) = &self.socket {
                        let _ = socket.ws.send_with_str(&text);
                    }
                }
                Event::Attached {
                    state_identifier,
                    state,
                    changes,
                } => {
                    self.reconnect.attached();
                    let waiting = self.waiters.answered(&state_identifier);
                    if !waiting.is_empty() {
                        let state_js = to_js(&state);
                        for (resolve, _) in waiting {
                            effects.push((resolve, vec![state_js.clone()]));
                        }
                    }
                    if let Some(changes) = changes {
                        self.notify(&changes.updates, &changes.previous, effects);
                    }
                }
                Event::Updated { updates, previous } => self.notify(&updates, &previous, effects),
                Event::Acknowledged {
                    request_id,
                    updates,
                    version,
                } => {
                    if let Some((resolve, _)) = self.waiters.settled(request_id) {
                        effects.push((resolve, vec![applied(&updates, version)]));
                    }
                }
                Event::Failed {
                    request_id,
                    failure,
                } => {
                    if let Some((_, reject)) = self.waiters.settled(request_id) {
                        effects.push((reject, vec![update_error(&failure)]));
                    }
                }
                Event::AttachFailed {
                    state_identifier,
                    message,
                } => {
                    let waiting = self.waiters.answered(&state_identifier);
                    if waiting.is_empty() {
                        // A re-attach after a reconnect was refused: nobody is waiting.
                        self.report(&message, "attachFailed", effects);
                    }
                    for (_, reject) in waiting {
                        effects.push((reject, vec![error(&message, "attachFailed")]));
                    }
                }
                Event::StateRemoved {
                    state_identifier,
                    message,
                } => {
                    // Callers re-attaching to it: the answer to their attach no longer
                    // counts (see `Waiters`).
                    for (_, reject) in self.waiters.answered(&state_identifier) {
                        effects.push((reject, vec![error(&message, "attachFailed")]));
                    }
                    self.report(&message, "stateRemoved", effects)
                }
                Event::ServerError { message } => self.report(&message, "server", effects),
                Event::Presence(event) => presence.push(event),
                Event::PresenceFailed { reason, message } => {
                    self.report(&message, &reason_name(&reason), effects);
                }
                Event::PresenceDue(delay) => {
                    self.presence_timer = Timer::start(&self.this, delay, |inner, effects| {
                        inner.presence_timer = None;
                        let events = inner.core.presence_due();
                        inner.dispatch(events, effects);
                    });
                }
            }
        }
        self.presence.changed(&self.core, presence, effects);
    }
}
