// Baseline: what users would otherwise run. A straightforward Node.js server of the
// server-state-sync protocol on the `ws` package, written the way the original 1.0.5
// is: states in a Map, a list of clients per state, and each broadcast serialized with
// JSON.stringify once per recipient.
//   node server.js --addr 127.0.0.1:PORT
import { WebSocketServer } from 'ws';

const addrArg = process.argv.indexOf('--addr');
const [host, port] = (addrArg > 0 ? process.argv[addrArg + 1] : '127.0.0.1:5002').split(':');

const states = new Map([['bench', { value: {}, clients: [] }]]);

const server = new WebSocketServer({ host, port: Number(port) }, () => {
  console.log(`listening on ${host}:${server.address().port}`);
});

server.on('connection', (socket, request) => {
  const url = new URL(request.url, 'http://localhost');
  const identifier = url.searchParams.get('identifier');
  if (!identifier) {
    socket.close(1008, 'identifier missing');
    return;
  }
  let attached = null;
  socket.on('message', (raw) => {
    let message;
    try {
      message = JSON.parse(raw.toString());
    } catch {
      return;
    }
    if (message.type === 2) {
      const state = states.get(message.data?.stateIdentifier);
      if (!state) {
        socket.send(JSON.stringify({ type: 8, data: { message: 'State does not exist' } }));
        return;
      }
      state.clients.push(socket);
      attached = state;
      socket.send(JSON.stringify({ type: 7, data: { state: state.value } }));
    } else if (message.type === 3 && attached && message.data?.updates) {
      const updates = message.data.updates;
      Object.assign(attached.value, updates);
      for (const client of attached.clients) {
        client.send(JSON.stringify({ type: 3, data: { updates } }));
      }
    }
  });
  socket.on('close', () => {
    if (attached) attached.clients = attached.clients.filter((c) => c !== socket);
  });
});
