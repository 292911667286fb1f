//! The `Client` class: the original JavaScript client's API over a WebSocket, driven by
//! the shared [`ClientCore`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::Duration;

use js_sys::{Array, Function, Promise};
use serde::Deserialize;
use state_sync_protocol::{ClientCore, Event, JsonObject, Listeners, ReconnectPolicy};
use wasm_bindgen::prelude::*;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::convert::{error, object_from_js, to_js, update_error};

/// A JavaScript function to call once the `RefCell` borrow is released, so that a
/// listener may call back into the client.
type Effects = Vec<(Function, Vec<JsValue>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Connecting,
    Connected,
    Reconnecting,
    Closed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Connecting => "connecting",
            Status::Connected => "connected",
            Status::Reconnecting => "reconnecting",
            Status::Closed => "closed",
        }
    }
}

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

struct Timer {
    handle: i32,
    _callback: Closure<dyn FnMut()>,
}

struct Inner {
    this: Weak<RefCell<Inner>>,
    core: ClientCore,
    url: String,
    policy: ReconnectPolicy,
    socket: Option<Socket>,
    timer: Option<Timer>,
    status: Status,
    attempt: u32,
    listeners: Listeners<Function>,
    status_listeners: Vec<(String, Function)>,
    error_listeners: Vec<(String, Function)>,
    /// Callers of `onConnection` (resolve, reject).
    connection_waiters: Vec<(Function, Function)>,
    error_waiters: Vec<Function>,
    /// Callers of `connectToState` (resolve, reject), with the state they asked for.
    attach_waiters: Vec<(String, Function, Function)>,
    update_waiters: HashMap<u64, (Function, Function)>,
}

/// Options of the constructor's fourth argument.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Options {
    /// `false` to never reconnect, or the backoff settings.
    reconnect: Option<ReconnectOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ReconnectOptions {
    Enabled(bool),
    Policy {
        #[serde(rename = "initialDelayMs")]
        initial_delay_ms: Option<f64>,
        #[serde(rename = "maxDelayMs")]
        max_delay_ms: Option<f64>,
        multiplier: Option<f64>,
        jitter: Option<f64>,
        #[serde(rename = "maxAttempts")]
        max_attempts: Option<u32>,
    },
}

fn policy_from(options: Option<ReconnectOptions>) -> ReconnectPolicy {
    let default = ReconnectPolicy::default();
    let millis = |ms: Option<f64>, fallback: Duration| {
        ms.map_or(fallback, |ms| Duration::from_secs_f64(ms.max(0.0) / 1000.0))
    };
    match options {
        None | Some(ReconnectOptions::Enabled(true)) => default,
        Some(ReconnectOptions::Enabled(false)) => ReconnectPolicy::disabled(),
        Some(ReconnectOptions::Policy {
            initial_delay_ms,
            max_delay_ms,
            multiplier,
            jitter,
            max_attempts,
        }) => ReconnectPolicy {
            enabled: true,
            initial: millis(initial_delay_ms, default.initial),
            max: millis(max_delay_ms, default.max),
            multiplier: multiplier.unwrap_or(default.multiplier),
            jitter: jitter.unwrap_or(default.jitter),
            max_attempts,
        },
    }
}

fn run(effects: Effects) {
    for (function, arguments) in effects {
        let arguments: Array = arguments.into_iter().collect();
        if let Err(thrown) = function.apply(&JsValue::NULL, &arguments) {
            web_sys::console::error_2(&"server-state-sync: a callback threw".into(), &thrown);
        }
    }
}

/// Runs `f` on the client's state if it still exists, then the JavaScript callbacks it
/// queued, outside the borrow.
fn with_inner(this: &Weak<RefCell<Inner>>, f: impl FnOnce(&mut Inner, &mut Effects)) {
    let Some(inner) = this.upgrade() else { return };
    let mut effects = Vec::new();
    match inner.try_borrow_mut() {
        Ok(mut inner) => f(&mut inner, &mut effects),
        // Re-entered from a callback; cannot happen since callbacks run after the borrow.
        Err(_) => return,
    }
    run(effects);
}

impl Inner {
    fn open(&mut self, effects: &mut Effects) {
        let ws = match WebSocket::new(&self.url) {
            Ok(ws) => ws,
            Err(thrown) => {
                let message = thrown
                    .as_string()
                    .unwrap_or_else(|| "could not open the WebSocket".into());
                self.report(&message, "connect", effects);
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
            with_inner(&this, |inner, effects| {
                if event.code() == 1009 {
                    // The server found a frame too large: fail that update, do not resend it.
                    let events = inner.core.frame_too_large();
                    inner.dispatch(events, effects);
                }
                inner.socket = None;
                inner.connection_lost(effects);
            });
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

    fn set_status(&mut self, status: Status, effects: &mut Effects) {
        if self.status == status {
            return;
        }
        self.status = status;
        for (_, listener) in &self.status_listeners {
            effects.push((listener.clone(), vec![status.as_str().into()]));
        }
    }

    fn on_open(&mut self, effects: &mut Effects) {
        if self.core.state_identifier().is_none() {
            // Nothing to attach to: the connection itself is the success. Otherwise the
            // backoff restarts only once attached (a server that accepts and drops at
            // once still gets it).
            self.attempt = 0;
        }
        self.set_status(Status::Connected, effects);
        for (resolve, _) in self.connection_waiters.drain(..) {
            effects.push((resolve, vec![]));
        }
        let events = self.core.transport_up();
        self.dispatch(events, effects);
    }

    fn connection_lost(&mut self, effects: &mut Effects) {
        if self.status == Status::Closed {
            return;
        }
        let events = self.core.transport_down();
        self.dispatch(events, effects);
        let random = js_sys::Math::random();
        match self.policy.delay(self.attempt, random) {
            Some(delay) => {
                self.attempt = self.attempt.saturating_add(1);
                if self.status != Status::Connecting {
                    self.set_status(Status::Reconnecting, effects);
                }
                self.schedule(delay, effects);
            }
            None => self.shut_down(
                "the connection was lost and reconnecting is off or gave up",
                effects,
            ),
        }
    }

    fn schedule(&mut self, delay: Duration, effects: &mut Effects) {
        let this = self.this.clone();
        let callback = Closure::<dyn FnMut()>::new(move || {
            with_inner(&this, |inner, effects| {
                inner.timer = None;
                if inner.status != Status::Closed {
                    inner.open(effects);
                }
            });
        });
        let millis = i32::try_from(delay.as_millis()).unwrap_or(i32::MAX);
        let scheduled = web_sys::window().map(|window| {
            window.set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                millis,
            )
        });
        match scheduled {
            Some(Ok(handle)) => {
                self.timer = Some(Timer {
                    handle,
                    _callback: callback,
                })
            }
            _ => self.shut_down("cannot schedule a reconnection outside a window", effects),
        }
    }

    /// Closes for good: pending updates and waiters fail.
    fn shut_down(&mut self, why: &str, effects: &mut Effects) {
        if self.status == Status::Closed {
            return;
        }
        self.socket = None;
        if let (Some(timer), Some(window)) = (self.timer.take(), web_sys::window()) {
            window.clear_timeout_with_handle(timer.handle);
        }
        let events = self.core.close();
        self.dispatch(events, effects);
        for (_, _, reject) in self.attach_waiters.drain(..) {
            effects.push((reject, vec![error(why, "closed")]));
        }
        for reject in self.connection_waiters.drain(..).map(|(_, reject)| reject) {
            effects.push((reject, vec![error(why, "closed")]));
        }
        let closed = error(why, "closed");
        for resolve in self.error_waiters.drain(..) {
            effects.push((resolve, vec![closed.clone()]));
        }
        self.set_status(Status::Closed, effects);
    }

    fn report(&mut self, message: &str, reason: &str, effects: &mut Effects) {
        let value = error(message, reason);
        for resolve in self.error_waiters.drain(..) {
            effects.push((resolve, vec![value.clone()]));
        }
        for (_, listener) in &self.error_listeners {
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

    fn dispatch(&mut self, events: Vec<Event>, effects: &mut Effects) {
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
                    self.attempt = 0;
                    let state_js = to_js(&state);
                    for (_, resolve, _) in self
                        .attach_waiters
                        .extract_if(.., |(id, _, _)| *id == state_identifier)
                    {
                        effects.push((resolve, vec![state_js.clone()]));
                    }
                    if let Some(changes) = changes.filter(|c| !c.is_empty()) {
                        self.notify(&changes.updates, &changes.previous, effects);
                    }
                }
                Event::Updated { updates, previous } => self.notify(&updates, &previous, effects),
                Event::Acknowledged {
                    request_id,
                    updates,
                    version,
                } => {
                    if let Some((resolve, _)) = self.update_waiters.remove(&request_id) {
                        let applied = js_sys::Object::new();
                        let _ =
                            js_sys::Reflect::set(&applied, &"updates".into(), &to_js(&*updates));
                        let version =
                            version.map_or(JsValue::NULL, |v| JsValue::from_f64(v as f64));
                        let _ = js_sys::Reflect::set(&applied, &"version".into(), &version);
                        effects.push((resolve, vec![applied.into()]));
                    }
                }
                Event::Failed {
                    request_id,
                    failure,
                } => {
                    if let Some((_, reject)) = self.update_waiters.remove(&request_id) {
                        effects.push((reject, vec![update_error(&failure)]));
                    }
                }
                Event::AttachFailed {
                    state_identifier,
                    message,
                } => {
                    let waiting: Vec<_> = self
                        .attach_waiters
                        .extract_if(.., |(id, _, _)| *id == state_identifier)
                        .collect();
                    if waiting.is_empty() {
                        // A re-attach after a reconnect was refused: nobody is waiting.
                        self.report(&message, "attachFailed", effects);
                    }
                    for (_, _, reject) in waiting {
                        effects.push((reject, vec![error(&message, "attachFailed")]));
                    }
                }
                Event::StateRemoved { message, .. } => {
                    self.report(&message, "stateRemoved", effects)
                }
                Event::ServerError { message } => self.report(&message, "server", effects),
            }
        }
    }
}

/// A client of a server-state-sync server, with the original JavaScript client's API.
#[wasm_bindgen]
pub struct Client {
    inner: Rc<RefCell<Inner>>,
}

/// A random session identifier. `crypto.randomUUID` exists only in secure contexts
/// (https, localhost); elsewhere `crypto.getRandomValues` does the job.
fn session_identifier() -> String {
    let crypto = web_sys::window().and_then(|w| w.crypto().ok());
    let secure = web_sys::window().is_some_and(|w| w.is_secure_context());
    if let (Some(crypto), true) = (&crypto, secure) {
        return crypto.random_uuid();
    }
    let mut bytes = [0u8; 16];
    if let Some(crypto) = crypto {
        let _ = crypto.get_random_values_with_u8_array(&mut bytes);
    }
    if bytes == [0u8; 16] {
        for byte in &mut bytes {
            *byte = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_promise(register: impl FnOnce(Function, Function)) -> Promise {
    let mut register = Some(register);
    Promise::new(&mut |resolve, reject| {
        if let Some(register) = register.take() {
            register(resolve, reject);
        }
    })
}

impl Client {
    fn with(&self, f: impl FnOnce(&mut Inner, &mut Effects)) {
        with_inner(&Rc::downgrade(&self.inner), f);
    }
}

#[wasm_bindgen]
impl Client {
    /// Opens a connection to `endpoint` (`ws://…` or `wss://…`) as `identifier`, with
    /// an optional access token. `options.reconnect` is `false` to never reconnect, or
    /// `{initialDelayMs, maxDelayMs, multiplier, jitter, maxAttempts}`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        endpoint: &str,
        identifier: &str,
        access_token: Option<String>,
        options: JsValue,
    ) -> Result<Client, JsError> {
        if !(endpoint.starts_with("ws://") || endpoint.starts_with("wss://")) {
            return Err(JsError::new(&format!(
                "invalid endpoint {endpoint:?}: it must start with ws:// or wss://"
            )));
        }
        let options: Options = if options.is_undefined() || options.is_null() {
            Options::default()
        } else {
            crate::convert::parse(options)
                .and_then(|value| serde_json::from_value(value).map_err(|e| e.to_string()))
                .map_err(|e| JsError::new(&format!("invalid options: {e}")))?
        };
        let encode = |value: &str| String::from(js_sys::encode_uri_component(value));
        let (base, separator) = match endpoint.split_once('?') {
            Some(_) => (endpoint.to_owned(), '&'),
            None if endpoint.matches('/').count() == 2 => (format!("{endpoint}/"), '?'),
            None => (endpoint.to_owned(), '?'),
        };
        let url = format!(
            "{base}{separator}identifier={}&token={}",
            encode(identifier),
            encode(access_token.as_deref().unwrap_or(""))
        );
        let session = session_identifier();
        let inner = Rc::new_cyclic(|this| {
            RefCell::new(Inner {
                this: this.clone(),
                core: ClientCore::new(session),
                url,
                policy: policy_from(options.reconnect),
                socket: None,
                timer: None,
                status: Status::Connecting,
                attempt: 0,
                listeners: Listeners::new(),
                status_listeners: Vec::new(),
                error_listeners: Vec::new(),
                connection_waiters: Vec::new(),
                error_waiters: Vec::new(),
                attach_waiters: Vec::new(),
                update_waiters: HashMap::new(),
            })
        });
        let client = Client { inner };
        client.with(|inner, effects| inner.open(effects));
        Ok(client)
    }

    /// Resolves once connected (at once when already connected).
    #[wasm_bindgen(js_name = onConnection)]
    pub fn on_connection(&self) -> Promise {
        new_promise(|resolve, reject| {
            self.with(|inner, effects| match inner.status {
                Status::Connected => effects.push((resolve, vec![])),
                Status::Closed => {
                    effects.push((reject, vec![error("the client is closed", "closed")]))
                }
                _ => inner.connection_waiters.push((resolve, reject)),
            });
        })
    }

    /// Attaches to a state; resolves with its whole value. The client re-attaches by
    /// itself after reconnecting.
    #[wasm_bindgen(js_name = connectToState)]
    pub fn connect_to_state(&self, state_identifier: &str) -> Promise {
        new_promise(|resolve, reject| {
            self.with(|inner, effects| {
                if inner.status == Status::Closed {
                    effects.push((reject, vec![error("the client is closed", "closed")]));
                    return;
                }
                // Callers waiting for another state are answered: that attach is superseded.
                let superseded = format!("superseded by attaching to {state_identifier}");
                for (_, _, rejected) in inner
                    .attach_waiters
                    .extract_if(.., |(id, _, _)| id != state_identifier)
                {
                    effects.push((rejected, vec![error(&superseded, "attachFailed")]));
                }
                inner
                    .attach_waiters
                    .push((state_identifier.to_owned(), resolve, reject));
                let events = inner.core.connect_to_state(state_identifier);
                inner.dispatch(events, effects);
            });
        })
    }

    /// Sends a partial state. Resolves with `{updates, version}` once the server applied
    /// it (the updates as applied); rejects with an `Error` whose `reason` says why
    /// (`"vetoed"`, `"invalid"`, `"stateDoesNotExist"`, `"closed"`, …). Delivered exactly
    /// once across reconnections; ignoring the promise is fine.
    #[wasm_bindgen(js_name = updateState)]
    pub fn update_state(&self, updates: JsValue) -> Promise {
        let updates = object_from_js(updates);
        new_promise(|resolve, reject| {
            self.with(|inner, effects| {
                let updates = match updates {
                    Ok(updates) => updates,
                    Err(message) => {
                        return effects.push((reject, vec![error(&message, "invalid")]));
                    }
                };
                if inner.status == Status::Closed {
                    return effects.push((reject, vec![error("the client is closed", "closed")]));
                }
                let (request_id, events) = inner.core.update(updates);
                inner.update_waiters.insert(request_id, (resolve, reject));
                inner.dispatch(events, effects);
            });
        })
    }

    /// Calls `handler(updates, previousValues)` for every change of the local state
    /// that touches one of `properties` (all changes when absent or empty). The same
    /// `listenerId` replaces the earlier listener.
    #[wasm_bindgen(js_name = addStateUpdateListener)]
    pub fn add_state_update_listener(
        &self,
        listener_id: &str,
        handler: Function,
        properties: Option<Vec<String>>,
    ) {
        self.with(|inner, _| {
            inner
                .listeners
                .add(listener_id, properties.unwrap_or_default(), handler)
        });
    }

    /// Removes a listener; `false` when there was none with this id.
    #[wasm_bindgen(js_name = removeStateUpdateListener)]
    pub fn remove_state_update_listener(&self, listener_id: &str) -> bool {
        let mut removed = false;
        self.with(|inner, _| removed = inner.listeners.remove(listener_id));
        removed
    }

    /// The local copy of the state (a new object on each call).
    #[wasm_bindgen(js_name = getState)]
    pub fn get_state(&self) -> JsValue {
        let mut state = JsValue::UNDEFINED;
        self.with(|inner, _| state = to_js(inner.core.state()));
        state
    }

    /// The local state's version (`undefined` before attaching or with the original server).
    #[wasm_bindgen(getter, js_name = stateVersion)]
    pub fn state_version(&self) -> Option<f64> {
        let mut version = None;
        self.with(|inner, _| version = inner.core.version().map(|v| v as f64));
        version
    }

    /// Resolves with the next error not tied to one call (state removed, server error, …).
    #[wasm_bindgen(js_name = onError)]
    pub fn on_error(&self) -> Promise {
        new_promise(|resolve, _| self.with(|inner, _| inner.error_waiters.push(resolve)))
    }

    /// Calls `handler(error)` for every error not tied to one call; the same id replaces.
    #[wasm_bindgen(js_name = addErrorListener)]
    pub fn add_error_listener(&self, listener_id: &str, handler: Function) {
        self.with(|inner, _| {
            inner.error_listeners.retain(|(id, _)| id != listener_id);
            inner
                .error_listeners
                .push((listener_id.to_owned(), handler));
        });
    }

    /// Removes an error listener.
    #[wasm_bindgen(js_name = removeErrorListener)]
    pub fn remove_error_listener(&self, listener_id: &str) {
        self.with(|inner, _| inner.error_listeners.retain(|(id, _)| id != listener_id));
    }

    /// `"connecting"`, `"connected"`, `"reconnecting"` or `"closed"`.
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> String {
        let mut status = Status::Closed;
        self.with(|inner, _| status = inner.status);
        status.as_str().to_owned()
    }

    /// Calls `handler(status)` on every status change; the same id replaces.
    #[wasm_bindgen(js_name = addStatusListener)]
    pub fn add_status_listener(&self, listener_id: &str, handler: Function) {
        self.with(|inner, _| {
            inner.status_listeners.retain(|(id, _)| id != listener_id);
            inner
                .status_listeners
                .push((listener_id.to_owned(), handler));
        });
    }

    /// Removes a status listener.
    #[wasm_bindgen(js_name = removeStatusListener)]
    pub fn remove_status_listener(&self, listener_id: &str) {
        self.with(|inner, _| inner.status_listeners.retain(|(id, _)| id != listener_id));
    }

    /// Closes the connection for good; pending updates reject with reason `"closed"`.
    pub fn close(&self) {
        self.with(|inner, effects| inner.shut_down("the client was closed", effects));
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}
