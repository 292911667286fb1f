import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { initialize } from 'server-state-sync-wasm';
import { Chat } from './Chat.jsx';
import './chat.css';

// Load the WebAssembly client before the first render (optional: clients wait for it
// by themselves, but then the page would show "Connecting…" a moment longer).
initialize().finally(() => {
  createRoot(document.getElementById('root')).render(
    <StrictMode>
      <Chat />
    </StrictMode>,
  );
});
