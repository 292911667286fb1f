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
  | 'unconfirmed'
  | 'detached'
  | 'closed'
  | 'attachFailed'
  | 'stateRemoved'
  | 'server'
  | 'connect'
  | 'other';

/** Errors of the client are `Error`s with a `reason`. */
export interface StateSyncError extends Error {
  reason: FailureReason;
}

/**
 * A change of the state as listeners hear it: the keys that changed with their new
 * values. After a reconnect, a key the state lost is `null`.
 */
export type Changes<T> = { [K in keyof T]?: T[K] | null };

/** An update the server applied. */
export interface Applied<T> {
  /** The updates as applied (the server's interceptor may have rewritten them). */
  updates: Partial<T>;
  /** The state's version after it; `null` with the original JavaScript server. */
  version: number | null;
}

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
 * shape `T` of the state.
 */
export declare class Client<T extends object = Record<string, unknown>> {
  constructor(endpoint: string, identifier: string, accessToken?: string | null, options?: ClientOptions);
  /** Resolves once connected. */
  onConnection(): Promise<void>;
  /** Attaches to a state; resolves with its whole value. */
  connectToState(stateIdentifier: string): Promise<T>;
  /** Sends a partial state; resolves once the server applied it, rejects with a reason. */
  updateState(updates: Partial<T>): Promise<Applied<T>>;
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
  /** Closes for good; pending updates reject with reason "closed". */
  close(): void;
}

/** Loads the WebAssembly module ahead of time, or from another location. Optional. */
export declare function initialize(
  moduleOrPath?: string | URL | Request | Response | BufferSource | WebAssembly.Module,
): Promise<void>;
