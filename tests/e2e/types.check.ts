// Type-checked (not run) by scripts/test.sh: the package's TypeScript types accept
// what they should and reject what they should (each @ts-expect-error must be an error,
// or tsc fails).
import {
  Client,
  type Applied,
  type ConnectionStatus,
  type PresenceChange,
  type PresenceEntry,
  type PresenceFailureReason,
  type StateSyncError,
} from 'server-state-sync-wasm';
import { useMyPresence, useOthers, useSyncedState } from 'server-state-sync-wasm/react';

interface Chat {
  chatMessages: { sender: string; content: string }[];
  topic: string;
  readers?: number;
}

const client = new Client<Chat>('ws://localhost:5000', 'alice', 'token', { reconnect: { maxDelayMs: 5000 } });
const applied: Promise<Applied<Chat>> = client.updateState({ topic: 'rust' });
void applied;
// @ts-expect-error: not a key of Chat
client.updateState({ nope: 1 });
// @ts-expect-error: topic is a string
client.updateState({ topic: 5 });

// Conditional and functional updates.
client.updateState({ topic: 'go' }, { ifVersion: 3 });
// @ts-expect-error: ifVersion is a number
client.updateState({ topic: 'go' }, { ifVersion: '3' });
client.updateState((prev) => ({ topic: `${prev.topic}!`, readers: (prev.readers ?? 0) + 1 }));
// @ts-expect-error: the function must return a partial Chat
client.updateState((prev) => ({ topic: prev.chatMessages.length }));
// @ts-expect-error: a functional update is conditional already
client.updateState((prev) => ({ topic: prev.topic }), { ifVersion: 3 });
client
  .updateState((prev) => ({ readers: (prev.readers ?? 0) + 1 }))
  .catch((error: StateSyncError) => error.reason === 'conflict' || error.reason === 'invalidOperation');

// Atomic operations.
const appended: Promise<Applied<Chat>> = client.append('chatMessages', [{ sender: 'a', content: 'hi' }], { max: 100 });
void appended;
// @ts-expect-error: a message needs a content
client.append('chatMessages', [{ sender: 'a' }]);
// @ts-expect-error: topic is not an array
client.append('topic', ['x']);
// @ts-expect-error: max is a number
client.append('chatMessages', [], { max: 'all' });
client.increment('readers');
client.increment('readers', -2);
// @ts-expect-error: topic is not a number
client.increment('topic');
client.removeKey('readers');
// @ts-expect-error: not a key of Chat
client.removeKey('nope');
client.removeKey('topic').then(({ updates }) => {
  // A removed key is null in the applied updates.
  const topic: string | null | undefined = updates.topic;
  void topic;
});

// Several endpoints, servers of one cluster (a readonly array too).
const servers = ['ws://10.0.0.1:5000', 'ws://10.0.0.2:5000'] as const;
const clustered = new Client<Chat>(servers, 'carol', 'token');
void clustered;
// @ts-expect-error: an endpoint is a string, or an array of strings
new Client(42, 'dave');
// @ts-expect-error: an array of endpoints holds strings
new Client(['ws://10.0.0.1:5000', 5], 'erin');

// Without a state type, any key goes.
const untyped = new Client('ws://localhost:5000', 'bob');
untyped.append('anything', [1, 'two']);
untyped.increment('counter', 2);
untyped.removeKey('whatever');
untyped.updateState((prev) => ({ seen: Object.keys(prev).length }));

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
  synced.updateState((prev) => ({ topic: prev.topic.toUpperCase() }));
  synced.updateState({ topic: 'x' }, { ifVersion: synced.version ?? 0 });
  synced.append('chatMessages', [{ sender: 'alice', content: 'hi' }], { max: 100 });
  // @ts-expect-error: topic is not an array
  synced.append('topic', ['x']);
  synced.increment('readers', 1);
  // @ts-expect-error: the amount is a number
  synced.increment('readers', '1');
  synced.removeKey('readers');
  return synced.status;
}

// Presence: typed by the shape of presence objects (and of users: the identifier by default).
interface Cursor {
  typing: boolean;
  x?: number;
}
const present = new Client<Chat, Cursor>('ws://localhost:5000', 'alice');
present.setPresence({ typing: true });
present.setPresence({ typing: false, x: 3 });
// @ts-expect-error: typing is a boolean
present.setPresence({ typing: 'yes' });
// @ts-expect-error: not a key of Cursor
present.setPresence({ typing: true, colour: 'red' });
// @ts-expect-error: a presence is an object
untyped.setPresence('typing');
// @ts-expect-error: not an array either
untyped.setPresence([1, 2]);
untyped.setPresence({ anything: ['goes', 1] });
const others: readonly PresenceEntry<Cursor>[] = present.getOthers();
for (const other of others) {
  const id: string = other.id;
  const user: string = other.user;
  // Until a client sets its presence, it is {}: every key may be missing.
  const typing: boolean | undefined = other.presence.typing;
  void [id, user, typing];
  // @ts-expect-error: entries are read-only
  other.presence = { typing: true };
}
// @ts-expect-error: the array is read-only
present.getOthers().push(others[0]);
const myPresence: Readonly<Partial<Cursor>> = present.getMyPresence();
void myPresence;
const presenceId: string | undefined = present.getPresenceId();
void presenceId;
const onPresence = (list: readonly PresenceEntry<Cursor>[], change: PresenceChange<Cursor>) => {
  if (change.type !== 'synced') {
    const who: string = change.entry.user;
    void who;
  }
  // @ts-expect-error: a synced change has no entry
  if (change.type === 'synced') void change.entry;
  void list;
};
present.addPresenceListener(onPresence);
const removed: boolean = present.removePresenceListener(onPresence);
void removed;
// A server that shows users as objects: say so with U.
const withProfiles = new Client<Chat, Cursor, { name: string; avatar: string }>('ws://localhost:5000', 'alice');
withProfiles.getOthers().map((other) => other.user.name);
present.onError().then((error) => {
  const reason: PresenceFailureReason | undefined =
    error.reason === 'tooLarge' || error.reason === 'rateLimited' ? error.reason : undefined;
  void reason;
});

export function PresenceWidget() {
  const others = useOthers<Cursor>('ws://localhost:5000', 'alice', 'room');
  const typing: string[] = others.filter((other) => other.presence.typing).map((other) => other.user);
  const [mine, setPresence] = useMyPresence<Cursor>('ws://localhost:5000', 'alice', 'room');
  const typingNow: boolean | undefined = mine.typing;
  setPresence({ typing: true });
  setPresence((prev) => ({ ...prev, typing: !prev.typing }));
  // @ts-expect-error: it replaces the presence, so typing (required) must be given
  setPresence({ x: 1 });
  // @ts-expect-error: typing is a boolean
  setPresence({ typing: 1 });
  // @ts-expect-error: useOthers takes the same arguments as useSyncedState
  useOthers(present);
  return [typing, typingNow];
}
