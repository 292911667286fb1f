// React hooks over the Client, built on useSyncExternalStore.
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
