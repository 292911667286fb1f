// Type-checked (not run) by scripts/test.sh: the package's TypeScript types accept
// what they should and reject what they should (each @ts-expect-error must be an error,
// or tsc fails).
import { Client, type Applied, type ConnectionStatus, type StateSyncError } from 'server-state-sync-wasm';
import { useSyncedState } from 'server-state-sync-wasm/react';

interface Chat {
  chatMessages: { sender: string; content: string }[];
  topic: string;
}

const client = new Client<Chat>('ws://localhost:5000', 'alice', 'token', { reconnect: { maxDelayMs: 5000 } });
const applied: Promise<Applied<Chat>> = client.updateState({ topic: 'rust' });
void applied;
// @ts-expect-error: not a key of Chat
client.updateState({ nope: 1 });
// @ts-expect-error: topic is a string
client.updateState({ topic: 5 });

client.addStateUpdateListener(
  'topic',
  (updates, previous) => {
    // After a reconnect, a key the state lost is null.
    const now: string | null | undefined = updates.topic;
    const before: string | undefined = previous.topic;
    void now;
    void before;
  },
  ['topic'],
);
// @ts-expect-error: the filter takes keys of Chat
client.addStateUpdateListener('bad', () => {}, ['nope']);

const state: Promise<Chat> = client.connectToState('room');
void state;
const status: ConnectionStatus = client.status;
void status;
client.onError().then((error: StateSyncError) => error.reason === 'vetoed');
// @ts-expect-error: not a status
const wrong: ConnectionStatus = 'offline';
void wrong;

export function ChatWidget() {
  const synced = useSyncedState<Chat>('ws://localhost:5000', 'alice', 'room', { accessToken: 't' });
  const messages = synced.state?.chatMessages ?? [];
  synced.updateState({ chatMessages: [...messages, { sender: 'alice', content: 'hi' }] });
  // @ts-expect-error: messages need a sender
  synced.updateState({ chatMessages: [{ content: 'hi' }] });
  return synced.status;
}
