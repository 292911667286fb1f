//! The exported `Client` class: the original JavaScript client's API. Each method
//! borrows the client's state (see `driver`), queues the JavaScript callbacks it
//! settles, and runs them after the borrow.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Promise};
use state_sync_protocol::{ConnectionStatus, Update};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::convert::{error, to_js};
use crate::driver::{Effects, Inner, new_promise, submit, with_inner};
use crate::{arguments, functional};

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

impl Client {
    fn with(&self, f: impl FnOnce(&mut Inner, &mut Effects)) {
        with_inner(&Rc::downgrade(&self.inner), f);
    }

    /// Queues an update whose arguments were checked: its promise, or the rejected
    /// promise of the wrong argument.
    fn submit(&self, update: Result<Update, JsValue>) -> Promise {
        match update {
            Ok(update) => submit(&Rc::downgrade(&self.inner), update),
            Err(invalid) => Promise::reject(&invalid),
        }
    }
}

#[wasm_bindgen]
impl Client {
    /// Opens a connection to `endpoint` (`ws://…` or `wss://…`) as `identifier`, with
    /// an optional access token. `options.reconnect` is `false` to never reconnect, or
    /// `{initialDelayMs, maxDelayMs, multiplier, jitter, maxAttempts}`.
    ///
    /// `endpoint` may also be an array of endpoints, servers of one cluster: the client
    /// opens the first, and after every failure (a connection that could not be opened
    /// or was lost) moves on to the next, after the last to the first again, with the
    /// reconnection delays counted across all of them. On the next server it
    /// re-attaches, resyncs and resends its unacknowledged updates, as after any
    /// reconnection. Every endpoint is checked; an empty array is refused.
    #[wasm_bindgen(constructor)]
    pub fn new(
        endpoint: JsValue,
        identifier: &str,
        access_token: Option<String>,
        options: JsValue,
    ) -> Result<Client, JsError> {
        let endpoints = crate::options::endpoints(&endpoint)?;
        let policy = crate::options::reconnect_policy(options)?;
        let urls = endpoints
            .iter()
            .map(|endpoint| endpoint.connection_url(identifier, access_token.as_deref()))
            .collect();
        let session = session_identifier();
        let inner =
            Rc::new_cyclic(|this| RefCell::new(Inner::new(this.clone(), session, urls, policy)));
        let client = Client { inner };
        client.with(|inner, effects| inner.open(effects));
        Ok(client)
    }

    /// Resolves once connected (at once when already connected).
    #[wasm_bindgen(js_name = onConnection)]
    pub fn on_connection(&self) -> Promise {
        new_promise(|resolve, reject| {
            self.with(|inner, effects| match inner.status {
                ConnectionStatus::Connected => effects.push((resolve, vec![])),
                ConnectionStatus::Closed => {
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
                if inner.status == ConnectionStatus::Closed {
                    effects.push((reject, vec![error("the client is closed", "closed")]));
                    return;
                }
                inner.connect_to_state(state_identifier, (resolve, reject), effects);
            });
        })
    }

    /// Sends a partial state. Resolves with `{updates, version}` once the server applied
    /// it (the updates as applied); rejects with an `Error` whose `reason` says why
    /// (`"vetoed"`, `"invalid"`, `"stateDoesNotExist"`, `"closed"`, …). Delivered exactly
    /// once across reconnections; ignoring the promise is fine. Each key replaces the
    /// state's: the last writer wins per key.
    ///
    /// With `options.ifVersion`, it is applied only if the state is at that version,
    /// else it rejects with reason `"conflict"` and changes nothing.
    ///
    /// Given a function `prev => partial` instead, it is a functional update: the
    /// function computes the updates from the state when they can be sent, and again
    /// whenever another writer got there first (see `functional`).
    #[wasm_bindgen(js_name = updateState)]
    pub fn update_state(&self, updates: JsValue, options: JsValue) -> Promise {
        if let Some(compute) = updates.dyn_ref::<Function>() {
            if let Err(invalid) = arguments::functional_options(&options) {
                return Promise::reject(&invalid);
            }
            let this = Rc::downgrade(&self.inner);
            return future_to_promise(functional::run(this, compute.clone()));
        }
        self.submit(arguments::update_state(updates, &options))
    }

    /// Appends `items` (an array) to the array at `key`, atomically: concurrent appends
    /// all land. A missing key counts as `[]`. With `options.max`, the oldest items go
    /// so that at most `max` remain. Resolves and rejects like `updateState` (reason
    /// `"invalidOperation"` when the key holds something else than an array).
    pub fn append(&self, key: JsValue, items: JsValue, options: JsValue) -> Promise {
        self.submit(arguments::append(&key, items, &options))
    }

    /// Adds `by` (a finite number, default 1) to the number at `key`, atomically. A
    /// missing key counts as `0`. Resolves and rejects like `updateState` (reason
    /// `"invalidOperation"` when the key holds something else than a number).
    pub fn increment(&self, key: JsValue, by: JsValue) -> Promise {
        self.submit(arguments::increment(&key, &by))
    }

    /// Removes `key` from the state (listeners hear it as `null`). Resolves and rejects
    /// like `updateState`.
    #[wasm_bindgen(js_name = removeKey)]
    pub fn remove_key(&self, key: JsValue) -> Promise {
        self.submit(arguments::remove_key(&key))
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
                .add(listener_id, properties.unwrap_or_default(), handler);
            inner.refresh_observed();
        });
    }

    /// Removes a listener; `false` when there was none with this id.
    #[wasm_bindgen(js_name = removeStateUpdateListener)]
    pub fn remove_state_update_listener(&self, listener_id: &str) -> bool {
        let mut removed = false;
        self.with(|inner, _| {
            removed = inner.listeners.remove(listener_id);
            inner.refresh_observed();
        });
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

    /// Resolves with the next error not tied to one call (state removed, server error,
    /// …). Connection failures come with reason `"connect"`, once per streak of failed
    /// attempts rather than on each: a connection that could not be opened (refused or
    /// unreachable: the browser does not say which), one the server closed before
    /// answering, and giving up reconnecting.
    #[wasm_bindgen(js_name = onError)]
    pub fn on_error(&self) -> Promise {
        new_promise(|resolve, _| self.with(|inner, _| inner.error_waiters.push(resolve)))
    }

    /// Calls `handler(error)` for every error not tied to one call. The same id
    /// replaces the earlier listener, which keeps its place in the calling order.
    #[wasm_bindgen(js_name = addErrorListener)]
    pub fn add_error_listener(&self, listener_id: &str, handler: Function) {
        self.with(|inner, _| inner.error_listeners.add(listener_id, Vec::new(), handler));
    }

    /// Removes an error listener.
    #[wasm_bindgen(js_name = removeErrorListener)]
    pub fn remove_error_listener(&self, listener_id: &str) {
        self.with(|inner, _| {
            inner.error_listeners.remove(listener_id);
        });
    }

    /// Sets this client's presence in its state: a plain object (`{typing: true}`, a
    /// cursor) that the others see as the `presence` of this client's entry. It
    /// replaces the previous one, whole. Sent at once when attached, at most every
    /// 50 ms (a later one waits, the latest winning), and again on every re-attach;
    /// set before attaching, it is sent with the attach. Throws a `TypeError` (reason
    /// `"invalid"`) for anything else than an object of JSON data. A presence the
    /// server refuses (over its size limit: reason `"tooLarge"`) is reported like
    /// other errors (`onError`, error listeners); the previous one stays.
    #[wasm_bindgen(js_name = setPresence)]
    pub fn set_presence(&self, presence: JsValue) -> Result<(), JsValue> {
        let presence = arguments::presence(presence)?;
        self.with(|inner, effects| inner.set_presence(presence, effects));
        Ok(())
    }

    /// This client's presence as last set (`{}` until then); the same frozen object
    /// until it is set again.
    #[wasm_bindgen(js_name = getMyPresence)]
    pub fn get_my_presence(&self) -> JsValue {
        let mut mine = JsValue::UNDEFINED;
        self.with(|inner, _| mine = inner.presence.mine(inner.core.my_presence()));
        mine
    }

    /// Everyone else attached to the state: `[{id, user, presence}]` in the order they
    /// joined (another tab of the same user is an entry of its own). `user` is what
    /// the server shows of each (by default their identifier). The same frozen array
    /// until somebody joins, leaves or changes their presence, and an entry that did
    /// not change keeps its object. Empty when not attached; kept while reconnecting.
    #[wasm_bindgen(js_name = getOthers)]
    pub fn get_others(&self) -> JsValue {
        let mut others = JsValue::UNDEFINED;
        self.with(|inner, _| others = inner.presence.others(&inner.core));
        others
    }

    /// This client's entry id in the state (the `id` the others see), once the server
    /// told it; `undefined` before.
    #[wasm_bindgen(js_name = getPresenceId)]
    pub fn get_presence_id(&self) -> Option<String> {
        let mut id = None;
        self.with(|inner, _| id = inner.core.presence_id().map(str::to_owned));
        id
    }

    /// Calls `handler(others, change)` on every change of the others: `others` is what
    /// `getOthers()` returns then, `change` is `{type, entry}` with `type` one of
    /// `"synced"` (the whole list was replaced: on attach and re-attach, or emptied on
    /// leaving the state; no `entry`), `"joined"`, `"updated"` (the entry as it is
    /// now) or `"left"` (the entry as it was). Changes that arrive together are heard
    /// in order, each with the list after all of them. A handler added twice is
    /// called once.
    #[wasm_bindgen(js_name = addPresenceListener)]
    pub fn add_presence_listener(&self, handler: Function) {
        self.with(|inner, _| {
            inner.presence.add_listener(handler);
        });
    }

    /// Removes a presence listener; `false` when it was not there.
    #[wasm_bindgen(js_name = removePresenceListener)]
    pub fn remove_presence_listener(&self, handler: &Function) -> bool {
        let mut removed = false;
        self.with(|inner, _| removed = inner.presence.remove_listener(handler));
        removed
    }

    /// `"connecting"`, `"connected"`, `"reconnecting"` or `"closed"`.
    #[wasm_bindgen(getter)]
    pub fn status(&self) -> String {
        let mut status = ConnectionStatus::Closed;
        self.with(|inner, _| status = inner.status);
        status.as_str().to_owned()
    }

    /// Calls `handler(status)` on every status change. The same id replaces the earlier
    /// listener, which keeps its place in the calling order.
    #[wasm_bindgen(js_name = addStatusListener)]
    pub fn add_status_listener(&self, listener_id: &str, handler: Function) {
        self.with(|inner, _| inner.status_listeners.add(listener_id, Vec::new(), handler));
    }

    /// Removes a status listener.
    #[wasm_bindgen(js_name = removeStatusListener)]
    pub fn remove_status_listener(&self, listener_id: &str) {
        self.with(|inner, _| {
            inner.status_listeners.remove(listener_id);
        });
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
