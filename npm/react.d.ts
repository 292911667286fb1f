import type { Applied, ClientOptions, ConnectionStatus, StateSyncError } from './index.js';

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
  /** Sends a partial state; resolves once applied, rejects with a reason (e.g. "vetoed"). */
  updateState(updates: Partial<T>): Promise<Applied<T>>;
}

/**
 * Subscribes the component to a synced state. Components that use the same endpoint,
 * identifier, state and token share one connection; it is correct under StrictMode.
 */
export declare function useSyncedState<T extends object = Record<string, unknown>>(
  endpoint: string,
  identifier: string,
  stateIdentifier: string,
  options?: SyncedStateOptions,
): SyncedState<T>;

/** Only the connection status of that connection. */
export declare function useConnectionStatus(
  endpoint: string,
  identifier: string,
  stateIdentifier: string,
  options?: SyncedStateOptions,
): ConnectionStatus;
