/** Where the connection stands. */
export type ConnectionStatus = 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** The `reason` of a rejected promise or a reported error. */
export type FailureReason =
  | 'invalid'
  | 'notAttached'
  | 'vetoed'
  | 'interceptorFailed'
  | 'stateDoesNotExist'
  | 'outcomeUnknown'
  | 'stateTooLarge'
  | 'storageFailed'
  | 'conflict'
  | 'invalidOperation'
  | 'unconfirmed'
  | 'detached'
  | 'closed'
  | 'attachFailed'
  | 'stateRemoved'
  | 'server'
  | 'connect'
  | 'tooLarge'
  | 'rateLimited'
  | 'other';

/**
 * Why the server refused a presence: the `reason` of the error reported to `onError`
 * and the error listeners (the previous presence stays).
 * - `"tooLarge"`: over the server's limit (2048 bytes of JSON by default);
 * - `"rateLimited"`: sent faster than the server allows (this client sends at most
 *   one every 50 ms);
 * - `"notAttached"`: the client was not attached to a state;
 * - `"invalid"`: not a presence object.
 */
export type PresenceFailureReason = 'invalid' | 'notAttached' | 'tooLarge' | 'rateLimited' | 'full' | 'other';

/** Errors of the client are `Error`s with a `reason`. */
export interface StateSyncError extends Error {
  reason: FailureReason;
}

/**
 * A change of the state as listeners hear it: the keys that changed with their new
 * values. A key the state lost (`removeKey`, or while reconnecting) is `null`.
 */
export type Changes<T> = { [K in keyof T]?: T[K] | null };

/** An update the server applied. */
export interface Applied<T> {
  /**
   * The updates as applied (the server's interceptor may have rewritten them): the
   * resulting value of each key an operation changed, `null` for a removed key.
   */
  updates: Changes<T>;
  /** The state's version after it; `null` with the original JavaScript server. */
  version: number | null;
}

/** Options of a plain `updateState`. */
export interface UpdateOptions {
  /**
   * Apply only if the state is at this version (the one the updates were computed
   * from); otherwise reject with reason `"conflict"` and change nothing.
   */
  ifVersion?: number;
}

/** Options of `append`. */
export interface AppendOptions {
  /** Keep at most this many items: the oldest go. */
  max?: number;
}

/** The items of an array type (`unknown` for an untyped key). */
export type ArrayItem<V> = unknown extends V ? unknown : NonNullable<V> extends readonly (infer I)[] ? I : never;

/** The keys of `T` that hold arrays (every key of an untyped state). */
export type ArrayKeys<T> = {
  [K in keyof T & string]-?: unknown extends T[K] ? K : NonNullable<T[K]> extends readonly unknown[] ? K : never;
}[keyof T & string];

/** The keys of `T` that hold numbers (every key of an untyped state). */
export type NumericKeys<T> = {
  [K in keyof T & string]-?: unknown extends T[K] ? K : NonNullable<T[K]> extends number ? K : never;
}[keyof T & string];

/**
 * One client attached to the state, as the others see it. `P` is the shape of the
 * presence objects, `U` what the server shows of each client (by default its
 * identifier, a string; a server may show something else).
 */
export interface PresenceEntry<P extends object = Record<string, unknown>, U = string> {
  /** Given by the server, unique in the state: two tabs of one user are two entries. */
  readonly id: string;
  /** Who it is, as the server shows it (by default the client's identifier). */
  readonly user: U;
  /** What its client set with `setPresence`; `{}` until it sets something. */
  readonly presence: Readonly<Partial<P>>;
}

/**
 * What changed in the others, as presence listeners hear it: the whole list replaced
 * (`"synced"`: on attach and re-attach, or emptied on leaving the state), or one entry
 * that joined, changed its presence (the entry as it is now) or left (as it was).
 */
export type PresenceChange<P extends object = Record<string, unknown>, U = string> =
  | { readonly type: 'synced' }
  | { readonly type: 'joined' | 'updated' | 'left'; readonly entry: PresenceEntry<P, U> };

export interface ReconnectOptions {
  /** Delay before the first attempt. Default 100. */
  initialDelayMs?: number;
  /** Longest delay. Default 10000. */
  maxDelayMs?: number;
  /** Growth per attempt. Default 2. */
  multiplier?: number;
  /** Fraction of each delay that is random. Default 0.5. */
  jitter?: number;
  /** Give up after this many attempts. Default: never. */
  maxAttempts?: number;
}

export interface ClientOptions {
  /** `false` never reconnects; default: reconnect with backoff. */
  reconnect?: boolean | ReconnectOptions;
}

/**
 * A client of a server-state-sync server: the original package's API, typed by the
 * shape `T` of the state, plus presence typed by the shape `P` of presence objects
 * and `U` of what the server shows of each client (by default its identifier).
 */
export declare class Client<
  T extends object = Record<string, unknown>,
  P extends object = Record<string, unknown>,
  U = string,
> {
  /**
   * Connects to `endpoint` (`ws://…` or `wss://…`) as `identifier`.
   *
   * `endpoint` may be an array of endpoints: servers of one cluster, any of which
   * serves the state. The client opens the first; after every failure (a connection
   * that could not be opened, or one that was lost) it moves on to the next, and after
   * the last to the first again (round robin), waiting the reconnection delays of
   * `options.reconnect` counted across all of them. On the next server it re-attaches,
   * resyncs (listeners hear what changed) and resends its unacknowledged updates, as
   * after any reconnection.
   *
   * Throws a `TypeError` for an endpoint that does not start with `ws://` or `wss://`
   * and for an empty array.
   */
  constructor(
    endpoint: string | readonly string[],
    identifier: string,
    accessToken?: string | null,
    options?: ClientOptions,
  );
  /** Resolves once connected. */
  onConnection(): Promise<void>;
  /** Attaches to a state; resolves with its whole value. */
  connectToState(stateIdentifier: string): Promise<T>;
  /**
   * Sends a partial state; resolves once the server applied it, rejects with a reason.
   * Each key replaces the state's: the last writer wins per key. With `ifVersion`, it
   * is applied only if the state is at that version (else reason `"conflict"`).
   */
  updateState(updates: Partial<T>, options?: UpdateOptions): Promise<Applied<T>>;
  /**
   * A functional update: `compute` gets the state when the update can be sent and
   * returns the partial state to send, conditionally on that version; when another
   * writer got there first it runs again with the newer state (up to 32 times, then
   * reason `"conflict"`). Resolves once, with what was applied; rejects with what
   * `compute` threw.
   */
  updateState(compute: (prev: T) => Partial<T>): Promise<Applied<T>>;
  /**
   * Appends `items` to the array at `key`, applied by the server to its current value:
   * concurrent appends all land. A missing key counts as `[]`; `max` keeps the newest.
   */
  append<K extends ArrayKeys<T>>(key: K, items: ArrayItem<T[K]>[], options?: AppendOptions): Promise<Applied<T>>;
  /** Adds `by` (default 1) to the number at `key`, atomically. A missing key counts as 0. */
  increment(key: NumericKeys<T>, by?: number): Promise<Applied<T>>;
  /** Removes `key` from the state; listeners hear it as `null`. */
  removeKey(key: keyof T & string): Promise<Applied<T>>;
  /** Listens to changes of `properties` (all when absent); the same id replaces. */
  addStateUpdateListener<K extends keyof T & string>(
    listenerId: string,
    handler: (updates: Changes<T>, previousValues: Partial<T>) => void,
    properties?: K[],
  ): void;
  removeStateUpdateListener(listenerId: string): boolean;
  /** The local copy of the state (`{}` until attached). */
  getState(): Partial<T>;
  /** The local copy's version (`undefined` before attaching or with the original server). */
  readonly stateVersion: number | undefined;
  readonly status: ConnectionStatus;
  /**
   * Resolves with the next error not tied to one call. Connection failures have reason
   * `"connect"` and come once per streak of failed attempts: a connection that could not
   * be opened (refused or unreachable), one closed before the server answered, giving up.
   */
  onError(): Promise<StateSyncError>;
  addErrorListener(listenerId: string, handler: (error: StateSyncError) => void): void;
  removeErrorListener(listenerId: string): void;
  addStatusListener(listenerId: string, handler: (status: ConnectionStatus) => void): void;
  removeStatusListener(listenerId: string): void;
  /**
   * Sets this client's presence in its state: what the others see as the `presence` of
   * its entry (`{ typing: true }`, a cursor). It replaces the previous one, whole (it
   * is not merged). Sent at once when attached, at most every 50 ms (a later one waits,
   * the latest winning), and again on every re-attach; set before attaching, it comes
   * with the attach. Throws a `TypeError` (reason `"invalid"`) for anything else than
   * an object of JSON data. A presence the server refuses is reported to `onError` and
   * the error listeners, with a `PresenceFailureReason` (`"tooLarge"`, …).
   */
  setPresence(presence: P): void;
  /** This client's presence as last set (`{}` before); the same object until set again. */
  getMyPresence(): Readonly<Partial<P>>;
  /**
   * Everyone else attached to the state, in the order they joined (empty when not
   * attached; kept while reconnecting). The same frozen array until somebody joins,
   * leaves or changes their presence, so it can be given to React as it is; an entry
   * that did not change keeps its object.
   */
  getOthers(): readonly PresenceEntry<P, U>[];
  /** This client's entry id (the `id` the others see), once the server told it. */
  getPresenceId(): string | undefined;
  /**
   * Calls `handler(others, change)` on every change of the others; `others` is what
   * `getOthers()` returns then. Changes that arrive together are heard in order, each
   * with the list after all of them. A handler added twice is called once.
   */
  addPresenceListener(
    handler: (others: readonly PresenceEntry<P, U>[], change: PresenceChange<P, U>) => void,
  ): void;
  /** Removes a presence listener; `false` when it was not there. */
  removePresenceListener(
    handler: (others: readonly PresenceEntry<P, U>[], change: PresenceChange<P, U>) => void,
  ): boolean;
  /** Closes for good; pending updates reject with reason "closed". */
  close(): void;
}

/** Loads the WebAssembly module ahead of time, or from another location. Optional. */
export declare function initialize(
  moduleOrPath?: string | URL | Request | Response | BufferSource | WebAssembly.Module,
): Promise<void>;
