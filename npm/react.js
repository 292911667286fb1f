// React hooks over the Client, built on useSyncExternalStore: the synced state
// (useSyncedState, useConnectionStatus) and presence (useOthers, useMyPresence).
//
// One connection per (endpoint, identifier, state, token), shared by every component
// that uses it and opened on the first subscription. The endpoint may be an array of
// endpoints (see Client); two arrays with the same endpoints in the same order are the
// same connection, so a component may build its array on every render. It is closed a tick after the
// last component unsubscribes, so React StrictMode's mount-unmount-mount in
// development reuses it instead of opening a second connection.
import { useSyncExternalStore } from 'react';
import { Client } from './index.js';

const stores = new Map();

const INITIAL = Object.freeze({ state: undefined, version: undefined, status: 'connecting', error: null });
// The presence hooks' values while no client is there: the same objects every time.
const NOBODY = Object.freeze([]);
const NOTHING = Object.freeze({});

class SyncedStore {
  constructor(key, endpoint, identifier, stateIdentifier, accessToken, options) {
    this.key = key;
    this.args = { endpoint, identifier, stateIdentifier, accessToken, options };
    this.snapshot = INITIAL;
    this.listeners = new Set();
    this.client = null;
    this.refs = 0;
    this.closeTimer = null;
    this.subscribe = this.subscribe.bind(this);
    this.getSnapshot = this.getSnapshot.bind(this);
    this.updateState = this.updateState.bind(this);
    this.append = this.append.bind(this);
    this.increment = this.increment.bind(this);
    this.removeKey = this.removeKey.bind(this);
    // Presence: set before the client exists, it is given to the client when it starts.
    this.pendingPresence = null;
    this.getOthers = this.getOthers.bind(this);
    this.getMyPresence = this.getMyPresence.bind(this);
    this.setPresence = this.setPresence.bind(this);
  }

  subscribe(listener) {
    this.listeners.add(listener);
    this.refs += 1;
    if (this.closeTimer !== null) {
      clearTimeout(this.closeTimer);
      this.closeTimer = null;
    }
    if (!this.client) this.start();
    return () => {
      this.listeners.delete(listener);
      this.refs -= 1;
      if (this.refs === 0) {
        this.closeTimer = setTimeout(() => this.stop(), 0);
      }
    };
  }

  getSnapshot() {
    return this.snapshot;
  }

  emit(patch) {
    this.snapshot = Object.freeze({ ...this.snapshot, ...patch });
    this.notify();
  }

  // Tells React to look again. A component re-renders only when what its hook reads
  // changed: a presence change leaves `snapshot` as it is, so useSyncedState alone
  // does not re-render for it, and the presence hooks' values do not change with the
  // state.
  notify() {
    for (const listener of this.listeners) listener();
  }

  start() {
    const { endpoint, identifier, stateIdentifier, accessToken, options } = this.args;
    const client = new Client(endpoint, identifier, accessToken, options);
    this.client = client;
    const refresh = () => this.emit({ state: client.getState(), version: client.stateVersion });
    client.addStatusListener('react', (status) => {
      // Back online: the error that was shown is over, and a resync may have changed
      // the version without changing any key.
      if (status === 'connected') this.emit({ status, error: null, version: client.stateVersion });
      else this.emit({ status });
    });
    client.addErrorListener('react', (error) => this.emit({ error }));
    client.addStateUpdateListener('react', refresh);
    client.addPresenceListener(() => this.notify());
    if (this.pendingPresence) client.setPresence(this.pendingPresence);
    this.pendingPresence = null;
    client
      .connectToState(stateIdentifier)
      .then(() => {
        refresh();
        this.emit({ status: client.status, error: null });
      })
      .catch((error) => this.emit({ error, status: client.status }));
  }

  stop() {
    this.closeTimer = null;
    if (this.refs > 0) return;
    if (this.client) this.client.close();
    this.client = null;
    this.snapshot = INITIAL;
    this.pendingPresence = null;
    if (stores.get(this.key) === this) stores.delete(this.key);
  }

  // Calls `f` with the client, or rejects when no component uses this state.
  withClient(f) {
    if (!this.client) {
      const error = new Error('not connected: no component uses this state');
      error.reason = 'closed';
      return Promise.reject(error);
    }
    return f(this.client);
  }

  updateState(updatesOrFunction, options) {
    return this.withClient((client) => client.updateState(updatesOrFunction, options));
  }

  append(key, items, options) {
    return this.withClient((client) => client.append(key, items, options));
  }

  increment(key, by) {
    return this.withClient((client) => client.increment(key, by));
  }

  removeKey(key) {
    return this.withClient((client) => client.removeKey(key));
  }

  getOthers() {
    return this.client ? this.client.getOthers() : NOBODY;
  }

  getMyPresence() {
    return this.client ? this.client.getMyPresence() : (this.pendingPresence ?? NOTHING);
  }

  // Replaces the presence (an object, or a function of the current one); throws a
  // TypeError for anything else, as Client.setPresence does.
  setPresence(next) {
    const presence = typeof next === 'function' ? next(this.getMyPresence()) : next;
    if (this.client) {
      this.client.setPresence(presence);
    } else {
      if (presence === null || typeof presence !== 'object' || Array.isArray(presence)) {
        const kind = presence === null ? 'null' : Array.isArray(presence) ? 'an array' : typeof presence;
        const error = new TypeError(`setPresence: the presence must be an object, got ${kind}`);
        error.reason = 'invalid';
        throw error;
      }
      this.pendingPresence = Object.freeze({ ...presence });
    }
    this.notify();
  }
}

function storeFor(endpoint, identifier, stateIdentifier, accessToken, options) {
  const key = JSON.stringify([endpoint, identifier, stateIdentifier, accessToken ?? null, options ?? null]);
  let store = stores.get(key);
  if (!store) {
    store = new SyncedStore(key, endpoint, identifier, stateIdentifier, accessToken, options);
    stores.set(key, store);
    // A render that never commits (or server rendering) never subscribes: forget the
    // store after a while so the map does not grow.
    if (typeof window !== 'undefined') store.closeTimer = setTimeout(() => store.stop(), 10000);
  }
  return store;
}

/**
 * Subscribes the component to a synced state.
 * Returns `{ state, version, status, error, updateState, append, increment, removeKey }`:
 * `state` is `undefined` until attached; `updateState(partial, { ifVersion })` or
 * `updateState(prev => partial)` and the atomic operations return the promise of the
 * applied update. The functions keep their identity as long as the connection does.
 */
export function useSyncedState(endpoint, identifier, stateIdentifier, { accessToken, options } = {}) {
  const store = storeFor(endpoint, identifier, stateIdentifier, accessToken, options);
  const snapshot = useSyncExternalStore(store.subscribe, store.getSnapshot, store.getSnapshot);
  const { updateState, append, increment, removeKey } = store;
  return { ...snapshot, updateState, append, increment, removeKey };
}

/** Only the connection status of the synced state's connection. */
export function useConnectionStatus(endpoint, identifier, stateIdentifier, { accessToken, options } = {}) {
  const store = storeFor(endpoint, identifier, stateIdentifier, accessToken, options);
  return useSyncExternalStore(
    store.subscribe,
    () => store.getSnapshot().status,
    () => store.getSnapshot().status,
  );
}

/**
 * Everyone else attached to the synced state, on the same connection as
 * useSyncedState: `[{ id, user, presence }]` in the order they joined (another tab of
 * the same user is an entry of its own). The component re-renders only when somebody
 * joins, leaves or changes their presence; the array and every unchanged entry keep
 * their identity until then.
 */
export function useOthers(endpoint, identifier, stateIdentifier, { accessToken, options } = {}) {
  const store = storeFor(endpoint, identifier, stateIdentifier, accessToken, options);
  return useSyncExternalStore(store.subscribe, store.getOthers, store.getOthers);
}

/**
 * This client's presence in the synced state, like useState: `[presence, setPresence]`.
 * `setPresence(next)` takes the whole new presence object, or a function
 * `prev => next`; it REPLACES the presence (it is not merged: spread `prev` to keep
 * keys). The others see it within 50 ms. `setPresence` keeps its identity as long as
 * the connection does; it throws a TypeError for anything else than an object.
 */
export function useMyPresence(endpoint, identifier, stateIdentifier, { accessToken, options } = {}) {
  const store = storeFor(endpoint, identifier, stateIdentifier, accessToken, options);
  const presence = useSyncExternalStore(store.subscribe, store.getMyPresence, store.getMyPresence);
  return [presence, store.setPresence];
}
