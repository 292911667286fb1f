//! Browser client for server-state-sync, compiled to WebAssembly with wasm-bindgen and
//! published to npm. Its JavaScript API is the original package's, so code written for
//! it moves over unchanged:
//!
//! ```js
//! import { Client } from 'server-state-sync-wasm';
//! const client = new Client('ws://localhost:5000', 'alice', 'token');
//! await client.onConnection();
//! const state = await client.connectToState('myGroupChat');
//! client.addStateUpdateListener('chat', (updates, previous) => render(updates), ['chatMessages']);
//! await client.updateState({ topic: 'Rust' });
//! await client.append('chatMessages', [{ sender: 'alice', content: 'hi' }], { max: 100 });
//! await client.updateState((prev) => ({ readers: [...prev.readers, 'alice'] }));
//! ```
//!
//! On top of it: `updateState` returns a promise of the applied update (rejected with
//! a `reason` when vetoed), the client reconnects with backoff, re-attaches, resyncs
//! (listeners hear what changed meanwhile) and delivers pending updates exactly once,
//! and `status` / `addStatusListener` tell the connection status. For concurrent
//! writers: atomic operations (`append`, `increment`, `removeKey`), conditional
//! updates (`updateState(updates, { ifVersion })`) and functional updates
//! (`updateState(prev => partial)`, retried on conflict like the native client's).
//!
//! The endpoint may be an array of endpoints, the servers of one cluster
//! (`new Client(['wss://a.example', 'wss://b.example'], 'alice', token)`): the client
//! opens the first, and after every failure (a connection that could not be opened, or
//! was lost) the next, after the last the first again (round robin), with the
//! reconnection delays counted across all of them; there it re-attaches, resyncs and
//! resends its unacknowledged updates, as after any reconnection. The policy is the
//! protocol crate's ([`Reconnect`](state_sync_protocol::Reconnect)), shared with the
//! native client, and so is the check of every endpoint.
//!
//! Presence: who else is attached to the same state, and what they are doing
//! (`{typing: true}`, a cursor). `setPresence(object)` sets this client's (the whole
//! object, sent at most every 50 ms, the latest winning, and again on every re-attach);
//! `getOthers()` returns everyone else's `{id, user, presence}`, the same array until
//! it changes (so React's `useSyncExternalStore` can take it as it is);
//! `addPresenceListener((others, change) => …)` hears each join, update and leave. A
//! presence the server refuses is reported like other errors (`onError`, error
//! listeners), with its reason (`"tooLarge"`, …).
//!
//! ```js
//! client.setPresence({ typing: true });
//! client.addPresenceListener((others, change) => console.log(change.type, change.entry));
//! client.getOthers(); // [{ id: 'p2', user: 'bob', presence: { typing: false } }]
//! ```
//!
//! The protocol logic is the protocol crate's [`ClientCore`](state_sync_protocol::ClientCore),
//! shared with the native client, and so is the bookkeeping around it: who waits for
//! what ([`Waiters`](state_sync_protocol::Waiters)), when the backoff starts over
//! ([`Reconnect`](state_sync_protocol::Reconnect)), the endpoint check and URL
//! ([`Endpoint`](state_sync_protocol::Endpoint)), listeners
//! ([`Listeners`](state_sync_protocol::Listeners)) and the status names. This crate
//! only opens the browser's WebSocket, runs its timer and calls JavaScript.
//! Nothing here panics on input from the network or from JavaScript; callbacks that
//! throw are logged and do not stop the client.
//!
//! # Layout
//! - `client`: the exported `Client` class.
//! - `arguments`: the arguments of the update methods, checked, as an `Update`.
//! - `functional`: functional updates (compute, send conditionally, retry on conflict).
//! - `driver`: the socket, its handlers and the timers; performs the core's events and
//!   queues the JavaScript callbacks.
//! - `presence`: `getOthers()`, `getMyPresence()` and the presence listeners: the
//!   core's presence as JavaScript values, the same objects until they change.
//! - `timer`: the browser's `setTimeout` (reconnections, presence sends).
//! - `options`: the constructor's endpoints (one, or an array) and options.
//! - `convert`: JSON values and errors across the JavaScript boundary.

#[cfg(target_arch = "wasm32")]
mod arguments;
#[cfg(target_arch = "wasm32")]
mod client;
#[cfg(target_arch = "wasm32")]
mod convert;
#[cfg(target_arch = "wasm32")]
mod driver;
#[cfg(target_arch = "wasm32")]
mod functional;
#[cfg(target_arch = "wasm32")]
mod options;
#[cfg(target_arch = "wasm32")]
mod presence;
#[cfg(target_arch = "wasm32")]
mod timer;

#[cfg(target_arch = "wasm32")]
pub use client::Client;
pub use state_sync_protocol as protocol;
