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

export class Client {
  #inner = null;
  #queue;
  #queued = 0;
  #closed = false;
  #listenerIds = new Set();

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

  /** Closes the connection for good; pending updates reject with reason "closed". */
  close() {
    this.#closed = true;
    open.delete(this);
    if (this.#inner) this.#inner.close();
  }
}
