import { useMemo, useState } from 'react';
import { useSyncedState } from 'server-state-sync-wasm/react';

// The server this page came from also serves the state syncer (see demo-server.rs);
// ?server=ws://host:port points the page elsewhere.
const params = new URLSearchParams(window.location.search);
const ENDPOINT =
  params.get('server') ?? `${window.location.protocol === 'https:' ? 'wss' : 'ws'}://${window.location.host}`;
const STATE = 'demo-chat';

function defaultName() {
  const saved = window.sessionStorage.getItem('chat-name');
  if (saved) return saved;
  const name = params.get('name') ?? `guest-${Math.floor(Math.random() * 10000)}`;
  window.sessionStorage.setItem('chat-name', name);
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

export function Chat() {
  const [name] = useState(defaultName);
  const { state, status, error, append } = useSyncedState(ENDPOINT, name, STATE);
  const [draft, setDraft] = useState('');
  const [sendError, setSendError] = useState(null);
  // Own messages not applied yet, shown as "sending…" until the server applied them.
  const [pending, setPending] = useState([]);
  const messages = useMemo(() => state?.chatMessages ?? [], [state]);

  function send(event) {
    event.preventDefault();
    const content = draft.trim();
    if (!content) return;
    const message = { id: crypto.randomUUID(), sender: name, content, sentAt: Date.now() };
    setPending((now) => [...now, message]);
    setDraft('');
    setSendError(null);
    // An atomic append: the server adds the message to the list it has, so messages
    // sent at the same moment by several people all land (sending the whole list would
    // let the last sender erase the others'). Queued while offline, delivered once.
    append('chatMessages', [message], { max: HISTORY })
      .catch((e) => setSendError(e.reason === 'vetoed' ? `Not sent: the server refused "${content}"` : `Not sent: ${e.message}`))
      .finally(() => setPending((now) => now.filter((m) => m.id !== message.id)));
  }

  return (
    <main className="chat">
      <header>
        <h1>Chat</h1>
        <span className={`status status-${status}`} data-testid="status">
          {STATUS_TEXT[status] ?? status}
        </span>
      </header>
      <p className="me">
        You are <strong data-testid="me">{name}</strong>
      </p>
      <ul className="messages" data-testid="messages">
        {messages.map((message) => (
          <li
            key={message.id ?? `${message.sender}-${message.content}`}
            className={message.sender === name ? 'mine' : ''}
            data-testid="message"
          >
            <span className="sender">{message.sender}</span>
            <span className="content">{message.content}</span>
          </li>
        ))}
        {pending
          .filter((message) => !messages.some((m) => m.id === message.id))
          .map((message) => (
            <li key={message.id} className="mine pending" data-testid="pending-message">
              <span className="sender">{message.sender}</span>
              <span className="content">{message.content}</span>
              <span className="note">sending…</span>
            </li>
          ))}
      </ul>
      {sendError && (
        <p className="error" role="alert" data-testid="send-error">
          {sendError}
        </p>
      )}
      {error && !sendError && (
        <p className="error" role="alert">
          {error.message}
        </p>
      )}
      <form onSubmit={send}>
        <input
          aria-label="Message"
          data-testid="draft"
          value={draft}
          onChange={(e) => setDraft(e.target.value)}
          placeholder="Say something (messages with the word spam are refused)"
          autoFocus
        />
        <button type="submit" disabled={!state}>
          Send
        </button>
      </form>
    </main>
  );
}
