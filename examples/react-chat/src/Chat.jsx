import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'react';
import { useMyPresence, useOthers, useSyncedState } from 'server-state-sync-wasm/react';

// The server this page came from also serves the state syncer (see demo-server.rs);
// ?server=ws://host:port points the page elsewhere.
const params = new URLSearchParams(window.location.search);
const ENDPOINT =
  params.get('server') ?? `${window.location.protocol === 'https:' ? 'wss' : 'ws'}://${window.location.host}`;
const STATE = 'demo-chat';

// The name is remembered in this browser; ?name=… sets it (the end-to-end test does).
const NAME_KEY = 'chat-name';
// As long as the name box allows.
const NAME_MAX = 40;

// localStorage throws where storage is blocked (cookies disabled, some sandboxed
// frames): the page then works without remembering the name.
function loadName() {
  try {
    return window.localStorage.getItem(NAME_KEY);
  } catch {
    return null;
  }
}

function saveName(name) {
  try {
    window.localStorage.setItem(NAME_KEY, name);
  } catch {
    // Not remembered, still used.
  }
}

function initialName() {
  const given = params.get('name')?.trim().slice(0, NAME_MAX);
  if (given) {
    saveName(given);
    return given;
  }
  const saved = loadName()?.trim();
  if (saved) return saved;
  const name = `guest-${Math.floor(Math.random() * 10000)}`;
  saveName(name);
  return name;
}

const STATUS_TEXT = {
  connecting: 'Connecting…',
  connected: 'Connected',
  reconnecting: 'Reconnecting…',
  closed: 'Disconnected',
};

// The chat keeps the newest messages only.
const HISTORY = 100;

// How close to the bottom (in pixels) still counts as "reading the newest messages".
const NEAR_BOTTOM = 48;

// "Typing" ends this long after the last keystroke, even if the text stays in the box.
const TYPING_IDLE_MS = 3000;

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: 'numeric', minute: '2-digit' });
const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
  month: 'short',
  day: 'numeric',
  hour: 'numeric',
  minute: '2-digit',
});

function SentAt({ at }) {
  // Any client can append a message: a time that is missing, not a number, or out of
  // a Date's range (1e300 would make toISOString throw and blank the page) shows none.
  if (typeof at !== 'number') return null;
  const date = new Date(at);
  if (Number.isNaN(date.getTime())) return null;
  const today = date.toDateString() === new Date().toDateString();
  return (
    <time className="time" dateTime={date.toISOString()} title={date.toLocaleString()} data-testid="sent-at">
      {(today ? timeFormat : dateTimeFormat).format(date)}
    </time>
  );
}

function Message({ message, mine, pending }) {
  return (
    <li
      className={`message${mine ? ' mine' : ''}${pending ? ' pending' : ''}`}
      data-testid={pending ? 'pending-message' : 'message'}
    >
      <div className="meta">
        <span className="sender">{message.sender}</span>
        {pending ? <span className="time">sending…</span> : <SentAt at={message.sentAt} />}
      </div>
      <div className="content">{message.content}</div>
    </li>
  );
}

// What the server shows of a client is its identifier here (the demo server's
// default), the name it chose; anything else is shown as text.
function userName(user) {
  return typeof user === 'string' ? user : JSON.stringify(user);
}

// The others, one per person: a person with two tabs open is one entry of each, shown
// once (with how many tabs). `typing` when any of their tabs is typing. In the order
// they came, but this page's name (its other tabs) first.
function groupByPerson(others, name) {
  const people = new Map([[name, null]]);
  for (const other of others) {
    const who = userName(other.user);
    const person = people.get(who) ?? { who, tabs: 0, typing: false };
    person.tabs += 1;
    person.typing ||= other.presence.typing === true;
    people.set(who, person);
  }
  return [...people.values()].filter(Boolean);
}

// "Alice is typing…", "Alice and Bob are typing…", "Alice, Bob and 3 others are typing…".
function typingText(names) {
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length <= 3) return `${names.slice(0, -1).join(', ')} and ${names.at(-1)} are typing…`;
  return `${names.slice(0, 2).join(', ')} and ${names.length - 2} others are typing…`;
}

function Avatar({ name }) {
  return (
    <span className="avatar" aria-hidden="true">
      {[...name][0]?.toUpperCase() ?? '?'}
    </span>
  );
}

// Who is online: this page first ("you"), then everyone else; the same name in
// another tab or browser is shown apart from "you".
function Online({ name, people }) {
  const count = 1 + people.filter((person) => person.who !== name).length;
  return (
    <section className="online" aria-label="Online" data-testid="online">
      <span className="online-count">{count} online</span>
      <ul>
        <li className="person you" data-testid="online-me">
          <Avatar name={name} />
          <span className="person-name">{name}</span>
          <span className="person-note">(you)</span>
        </li>
        {people.map((person) => (
          <li
            key={person.who}
            className={`person${person.typing ? ' is-typing' : ''}`}
            data-testid="online-user"
            title={person.tabs > 1 ? `${person.tabs} tabs` : undefined}
          >
            <Avatar name={person.who} />
            <span className="person-name">{person.who}</span>
            {person.who === name ? (
              <span className="person-note">(another tab{person.tabs > 1 ? `s: ${person.tabs}` : ''})</span>
            ) : (
              person.tabs > 1 && <span className="person-note">×{person.tabs}</span>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}

function NameForm({ name, onChange }) {
  const [editing, setEditing] = useState(false);
  const [value, setValue] = useState(name);
  if (!editing) {
    return (
      <button
        type="button"
        className="me"
        title="Change your name"
        data-testid="me"
        onClick={() => {
          setValue(name);
          setEditing(true);
        }}
      >
        {name}
      </button>
    );
  }
  const save = (event) => {
    event.preventDefault();
    const next = value.trim();
    if (next) onChange(next);
    setEditing(false);
  };
  return (
    <form className="name-form" onSubmit={save}>
      <input
        aria-label="Your name"
        data-testid="name-input"
        value={value}
        maxLength={NAME_MAX}
        onChange={(e) => setValue(e.target.value)}
        onKeyDown={(e) => e.key === 'Escape' && setEditing(false)}
        autoFocus
      />
      <button type="submit">Save</button>
    </form>
  );
}

export function Chat() {
  const [name, setName] = useState(initialName);
  const { state, status, error, append } = useSyncedState(ENDPOINT, name, STATE);
  // Presence, on the same connection: who else is here, and whether this page is typing.
  const others = useOthers(ENDPOINT, name, STATE);
  const [, setPresence] = useMyPresence(ENDPOINT, name, STATE);
  const people = useMemo(() => groupByPerson(others, name), [others, name]);
  const typing = typingText(people.filter((p) => p.typing && p.who !== name).map((p) => p.who));
  const [draft, setDraft] = useState('');
  const [sendError, setSendError] = useState(null);
  // Own messages not applied yet, shown as "sending…" until the server applied them.
  const [pending, setPending] = useState([]);
  const messages = useMemo(() => state?.chatMessages ?? [], [state]);
  const waiting = pending.filter((message) => !messages.some((m) => m.id === message.id));

  // Keep the newest message in view, unless the reader scrolled up to older ones.
  const list = useRef(null);
  const [atBottom, setAtBottom] = useState(true);
  const stick = useRef(true);
  const onScroll = () => {
    const el = list.current;
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < NEAR_BOTTOM;
    setAtBottom(stick.current);
  };
  const toBottom = () => {
    const el = list.current;
    if (el) el.scrollTop = el.scrollHeight;
    stick.current = true;
    setAtBottom(true);
  };
  const last = messages.at(-1);
  useLayoutEffect(() => {
    if (stick.current) toBottom();
  }, [last, waiting.length, sendError]);

  // Typing: while the box holds text that was edited in the last few seconds and has
  // the focus; not after sending. Only a change is sent (the presence replaces the
  // previous one: {typing} is all this page sets).
  const idle = useRef(null);
  function setTyping(now) {
    clearTimeout(idle.current);
    if (now) idle.current = setTimeout(() => setTyping(false), TYPING_IDLE_MS);
    setPresence((prev) => (prev.typing === now ? prev : { typing: now }));
  }
  useEffect(() => () => clearTimeout(idle.current), []);

  function edit(text) {
    setDraft(text);
    setTyping(text.trim() !== '');
  }

  function rename(next) {
    saveName(next);
    setName(next);
  }

  function send(event) {
    event.preventDefault();
    const content = draft.trim();
    if (!content) return;
    const message = { id: crypto.randomUUID(), sender: name, content, sentAt: Date.now() };
    setPending((now) => [...now, message]);
    setDraft('');
    setTyping(false);
    setSendError(null);
    toBottom();
    // An atomic append: the server adds the message to the list it has, so messages
    // sent at the same moment by several people all land (sending the whole list would
    // let the last sender erase the others'). Queued while offline, delivered once.
    append('chatMessages', [message], { max: HISTORY })
      .catch((e) => {
        setSendError(e.reason === 'vetoed' ? 'The server refused this message: edit it and send again.' : `Not sent: ${e.message}`);
        // The text goes back into the box (unless something new was typed meanwhile).
        setDraft((now) => (now === '' ? content : now));
      })
      .finally(() => setPending((now) => now.filter((m) => m.id !== message.id)));
  }

  return (
    <div className="app">
      <header className="bar">
        <div className="title">
          <h1>Chat</h1>
          <span className={`status status-${status}`} data-testid="status" title={error?.message}>
            {STATUS_TEXT[status] ?? status}
          </span>
        </div>
        <NameForm name={name} onChange={rename} />
      </header>
      {state && <Online name={name} people={people} />}

      <div className="body">
        <ul className="messages" data-testid="messages" ref={list} onScroll={onScroll}>
          {state && messages.length === 0 && waiting.length === 0 && (
            <li className="empty">
              No messages yet: say hello! (This server refuses messages with the word “spam”, to show how a
              refusal looks.)
            </li>
          )}
          {messages.map((message) => (
            <Message
              key={message.id ?? `${message.sender}-${message.sentAt}-${message.content}`}
              message={message}
              mine={message.sender === name}
            />
          ))}
          {waiting.map((message) => (
            <Message key={message.id} message={message} mine pending />
          ))}
        </ul>
        {!atBottom && (
          <button type="button" className="jump" data-testid="jump" onClick={toBottom}>
            Newest messages ↓
          </button>
        )}
      </div>

      <footer className="composer">
        <p className="typing" aria-live="polite" data-testid={typing ? 'typing' : undefined}>
          {typing}
        </p>
        {sendError && (
          <p className="error" role="alert" data-testid="send-error">
            {sendError}
            <button type="button" className="dismiss" aria-label="Dismiss" onClick={() => setSendError(null)}>
              ×
            </button>
          </p>
        )}
        {/* A failed connection shows in the status (it retries by itself); other errors here. */}
        {error && error.reason !== 'connect' && !sendError && (
          <p className="error" role="alert">
            {error.message}
          </p>
        )}
        <form onSubmit={send}>
          <input
            aria-label="Message"
            data-testid="draft"
            value={draft}
            onChange={(e) => edit(e.target.value)}
            onBlur={() => setTyping(false)}
            placeholder="Write a message…"
            autoComplete="off"
            autoFocus
          />
          <button type="submit" disabled={!state || !draft.trim()}>
            Send
          </button>
        </form>
      </footer>
    </div>
  );
}
