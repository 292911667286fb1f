import type {
  AppendOptions,
  Applied,
  ArrayItem,
  ArrayKeys,
  ClientOptions,
  ConnectionStatus,
  NumericKeys,
  PresenceEntry,
  StateSyncError,
  UpdateOptions,
} from './index.js';

export interface SyncedStateOptions {
  /** The access token the server's authorization middleware receives. */
  accessToken?: string;
  /** Client options (reconnection). */
  options?: ClientOptions;
}

export interface SyncedState<T extends object> {
  /** The state; `undefined` until attached. */
  state: T | undefined;
  /** Its version (`undefined` before attaching or with the original server). */
  version: number | undefined;
  status: ConnectionStatus;
  /** The last error not tied to one update (attach refused, state removed, …). */
  error: StateSyncError | null;
  /**
   * Sends a partial state; resolves once applied, rejects with a reason (e.g. "vetoed").
   * The last writer wins per key; with `ifVersion`, only if the state is at that version.
   */
  updateState(updates: Partial<T>, options?: UpdateOptions): Promise<Applied<T>>;
  /**
   * A functional update, like `setState(prev => next)`: computed from the state when it
   * can be sent, and again whenever another writer got there first.
   */
  updateState(compute: (prev: T) => Partial<T>): Promise<Applied<T>>;
  /** Appends `items` to the array at `key`, atomically; `max` keeps the newest. */
  append<K extends ArrayKeys<T>>(key: K, items: ArrayItem<T[K]>[], options?: AppendOptions): Promise<Applied<T>>;
  /** Adds `by` (default 1) to the number at `key`, atomically. */
  increment(key: NumericKeys<T>, by?: number): Promise<Applied<T>>;
  /** Removes `key` from the state. */
  removeKey(key: keyof T & string): Promise<Applied<T>>;
}

/**
 * Subscribes the component to a synced state. Components that use the same endpoint,
 * identifier, state and token share one connection; it is correct under StrictMode.
 * `endpoint` may be an array of endpoints, servers of one cluster, tried as
 * `new Client` tries them: the first, then the next after every failure (round robin).
 */
export declare function useSyncedState<T extends object = Record<string, unknown>>(
  endpoint: string | readonly string[],
  identifier: string,
  stateIdentifier: string,
  options?: SyncedStateOptions,
): SyncedState<T>;

/** Only the connection status of that connection. */
export declare function useConnectionStatus(
  endpoint: string | readonly string[],
  identifier: string,
  stateIdentifier: string,
  options?: SyncedStateOptions,
): ConnectionStatus;

/**
 * Everyone else attached to the state, on the same connection as `useSyncedState`,
 * in the order they joined (another tab of the same user is an entry of its own).
 * Re-renders only when somebody joins, leaves or changes their presence; the array and
 * every unchanged entry keep their identity until then. `P` is the shape of presence
 * objects, `U` what the server shows of each client (by default its identifier).
 */
export declare function useOthers<P extends object = Record<string, unknown>, U = string>(
  endpoint: string | readonly string[],
  identifier: string,
  stateIdentifier: string,
  options?: SyncedStateOptions,
): readonly PresenceEntry<P, U>[];

/**
 * Sets the presence: the whole new object, or a function of the current one. It
 * REPLACES the presence, it does not merge (spread `prev` to keep other keys). Throws
 * a `TypeError` for anything else than an object.
 */
export type SetPresence<P extends object> = (next: P | ((prev: Readonly<Partial<P>>) => P)) => void;

/**
 * This client's presence in the state, like `useState`: `[presence, setPresence]`
 * (`{}` until set). The others see a new presence within 50 ms, and again after a
 * reconnection.
 */
export declare function useMyPresence<P extends object = Record<string, unknown>>(
  endpoint: string | readonly string[],
  identifier: string,
  stateIdentifier: string,
  options?: SyncedStateOptions,
): [Readonly<Partial<P>>, SetPresence<P>];
