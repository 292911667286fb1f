// The public entry of the package: the original server-state-sync Client API, backed
// by the WebAssembly client. The module loads itself on first use; `initialize()` can
// start that earlier or point at another location of the .wasm file.
import init, { Client as WasmClient } from './pkg/state_sync_client_wasm.js';

let loading = null;

/**
 * Loads the WebAssembly module (once). Optional: clients wait for it by themselves.
 * @param {string | URL | Request | Response | BufferSource | WebAssembly.Module} [moduleOrPath]
 */
export function initialize(moduleOrPath) {
  if (!loading) {
    loading = init(moduleOrPath === undefined ? undefined : { module_or_path: moduleOrPath });
  }
  return loading.then(() => undefined);
}

// Open clients, so that one kept only through its listeners is not garbage-collected
// (which would close it) until close() is called.
const open = new Set();

// What the presence getters return before the module is loaded: the same objects on
// every call (React's useSyncExternalStore renders again whenever they change).
const NOBODY = Object.freeze([]);
const NOTHING = Object.freeze({});

// `value` frozen, and everything in it (as the WebAssembly client hands out presence).
function deepFreeze(value) {
  if (value !== null && typeof value === 'object') {
    for (const member of Object.values(value)) deepFreeze(member);
    Object.freeze(value);
  }
  return value;
}

// The presence as JSON, checked as the WebAssembly client checks it (with its texts),
// for a setPresence that must wait for the module: it throws at once all the same.
function presenceAsJson(presence) {
  const kind = presence === null ? 'null' : Array.isArray(presence) ? 'an array' : typeof presence;
  const wrong = (got) => {
    const error = new TypeError(`setPresence: the presence must be an object, got ${got}`);
    error.reason = 'invalid';
    return error;
  };
  if (kind !== 'object') throw wrong(kind);
  const notJson = (why) => {
    const error = new TypeError(`setPresence: the presence must be plain JSON data: ${why}`);
    error.reason = 'invalid';
    return error;
  };
  let text;
  try {
    text = JSON.stringify(presence);
  } catch {
    throw notJson('it cannot be turned into JSON');
  }
  if (text === undefined) throw notJson('it is undefined');
  const json = JSON.parse(text);
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw wrong(`${json === null ? 'null' : Array.isArray(json) ? 'an array' : `a ${typeof json}`} as JSON`);
  }
  return json;
}

export class Client {
  #inner = null;
  #queue;
  #queued = 0;
  #closed = false;
  #listenerIds = new Set();
  // The presence set before the module was loaded (what getMyPresence returns then).
  #presence = NOTHING;
  #presenceListeners = new Set();

  constructor(endpoint, identifier, accessToken, options) {
    // `endpoint` is one endpoint, or an array of them: servers of one cluster. The
    // client opens the first; after every failure (a connection that could not be
    // opened, or was lost) it moves on to the next, after the last to the first again,
    // with the reconnection delays counted across all of them.
    //
    // The endpoints are checked by the WebAssembly constructor (the protocol crate's
    // endpoint.rs: scheme, host, port, no fragment; an empty list). That one runs only
    // once the module is loaded, so a wrong scheme, the usual mistake, and an empty list
    // are refused here as well, at once and with the same text: `new Client('http://…')`
    // throws as it always did.
    const endpoints = Array.isArray(endpoint) ? [...endpoint] : [endpoint];
    if (endpoints.length === 0) {
      throw new TypeError('invalid endpoint "": no endpoint given (the list of endpoints is empty)');
    }
    for (const one of endpoints) {
      if (typeof one !== 'string' || !/^wss?:\/\//.test(one)) {
        throw new TypeError(`invalid endpoint ${JSON.stringify(one)}: it must start with ws:// or wss://`);
      }
    }
    if (typeof identifier !== 'string') {
      throw new TypeError('identifier must be a string');
    }
    const token = accessToken == null ? undefined : String(accessToken);
    // A copy: the caller may change its array before the module is loaded.
    const given = Array.isArray(endpoint) ? endpoints : endpoint;
    // Calls made before the module is loaded wait in this chain, in order.
    open.add(this);
    this.#queue = initialize().then(() => {
      this.#inner = new WasmClient(given, identifier, token, options);
      if (this.#closed) this.#inner.close();
      return this.#inner;
    });
  }

  // Calls made before the module is loaded wait in a chain and run in call order;
  // later calls run at once, but only after every queued one.
  #call(f) {
    if (this.#inner && this.#queued === 0) return f(this.#inner);
    this.#queued += 1;
    const ran = this.#queue.then((inner) => {
      this.#queued -= 1;
      // Boxed, so that a returned promise is not awaited before the next call runs.
      return [f(inner)];
    });
    this.#queue = ran.then(
      () => this.#inner,
      () => this.#inner,
    );
    return ran.then(([value]) => value);
  }

  /** Resolves once connected. */
  onConnection() {
    return Promise.resolve(this.#call((c) => c.onConnection()));
  }

  /** Attaches to a state; resolves with its whole value. */
  connectToState(stateIdentifier) {
    return Promise.resolve(this.#call((c) => c.connectToState(stateIdentifier)));
  }

  /**
   * Sends a partial state; resolves with `{updates, version}` once applied. The last
   * writer wins per key. With `{ ifVersion }`, only if the state is at that version
   * (else it rejects with reason "conflict"). Given a function `prev => partial`, it is
   * a functional update: computed from the state, sent conditionally, and computed
   * again whenever another writer got there first.
   */
  updateState(updatesOrFunction, options) {
    return Promise.resolve(this.#call((c) => c.updateState(updatesOrFunction, options)));
  }

  /** Appends `items` to the array at `key`, atomically; `{ max }` keeps the newest `max`. */
  append(key, items, options) {
    return Promise.resolve(this.#call((c) => c.append(key, items, options)));
  }

  /** Adds `by` (default 1) to the number at `key`, atomically. */
  increment(key, by) {
    return Promise.resolve(this.#call((c) => c.increment(key, by)));
  }

  /** Removes `key` from the state. */
  removeKey(key) {
    return Promise.resolve(this.#call((c) => c.removeKey(key)));
  }

  addStateUpdateListener(listenerId, handler, properties) {
    this.#listenerIds.add(listenerId);
    this.#call((c) => c.addStateUpdateListener(listenerId, handler, properties));
  }

  removeStateUpdateListener(listenerId) {
    const had = this.#listenerIds.delete(listenerId);
    this.#call((c) => c.removeStateUpdateListener(listenerId));
    return had;
  }

  getState() {
    return this.#inner ? this.#inner.getState() : {};
  }

  get stateVersion() {
    return this.#inner ? this.#inner.stateVersion : undefined;
  }

  get status() {
    if (this.#closed) return 'closed';
    return this.#inner ? this.#inner.status : 'connecting';
  }

  onError() {
    return Promise.resolve(this.#call((c) => c.onError()));
  }

  addErrorListener(listenerId, handler) {
    this.#call((c) => c.addErrorListener(listenerId, handler));
  }

  removeErrorListener(listenerId) {
    this.#call((c) => c.removeErrorListener(listenerId));
  }

  addStatusListener(listenerId, handler) {
    this.#call((c) => c.addStatusListener(listenerId, handler));
  }

  removeStatusListener(listenerId) {
    this.#call((c) => c.removeStatusListener(listenerId));
  }

  /**
   * Sets this client's presence in its state (a plain object, replacing the previous
   * one whole); the others see it in their `getOthers()`. Sent at most every 50 ms,
   * the latest winning, and again on every re-attach. Throws a TypeError for anything
   * else than an object of JSON data; a presence the server refuses is reported to
   * `onError` and the error listeners (reason "tooLarge", …).
   */
  setPresence(presence) {
    if (!this.#inner || this.#queued > 0) {
      // Checked now: a wrong value throws here, not later in the queue.
      this.#presence = deepFreeze(presenceAsJson(presence));
    }
    this.#call((c) => c.setPresence(presence));
  }

  /** This client's presence as last set (`{}` before); the same object until set again. */
  getMyPresence() {
    return this.#inner && this.#queued === 0 ? this.#inner.getMyPresence() : this.#presence;
  }

  /**
   * Everyone else attached to the state, `[{id, user, presence}]` in the order they
   * joined; the same frozen array until it changes.
   */
  getOthers() {
    return this.#inner ? this.#inner.getOthers() : NOBODY;
  }

  /** This client's entry id (the `id` others see), once the server told it. */
  getPresenceId() {
    return this.#inner ? this.#inner.getPresenceId() : undefined;
  }

  /** Calls `handler(others, change)` on every change of the others. */
  addPresenceListener(handler) {
    this.#presenceListeners.add(handler);
    this.#call((c) => c.addPresenceListener(handler));
  }

  /** Removes a presence listener; `false` when it was not there. */
  removePresenceListener(handler) {
    const had = this.#presenceListeners.delete(handler);
    this.#call((c) => c.removePresenceListener(handler));
    return had;
  }

  /** Closes the connection for good; pending updates reject with reason "closed". */
  close() {
    this.#closed = true;
    open.delete(this);
    if (this.#inner) this.#inner.close();
  }
}
