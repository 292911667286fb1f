// End-to-end: the React chat (examples/react-chat/dist) served by the Rust demo server,
// two pages in headless Chromium. Run by scripts/test.sh after scripts/build-web.sh:
//   DEMO_SERVER=target/release/demo-server node --test tests/e2e/
// Screenshots go to the folder printed at the start (E2E_SCREENSHOTS, or a temporary one).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '../..');
const serverBinary = resolve(root, process.env.DEMO_SERVER ?? 'target/release/demo-server');
const staticDir = resolve(root, 'examples/react-chat/dist');
const shots = process.env.E2E_SCREENSHOTS ?? mkdtempSync(join(tmpdir(), 'chat-e2e-'));
mkdirSync(shots, { recursive: true });
console.log(`screenshots: ${shots}`);

function freePort() {
  return new Promise((done, fail) => {
    const probe = createServer();
    probe.once('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => done(port));
    });
  });
}

// Each run saves the chat in a folder of its own (the demo server is durable).
const dataDir = mkdtempSync(join(tmpdir(), 'state-sync-e2e-'));

function startServer(port, folder = staticDir) {
  const child = spawn(serverBinary, ['--port', String(port), '--static', folder, '--data', join(dataDir, String(port))], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  return new Promise((done, fail) => {
    let output = '';
    const timer = setTimeout(() => fail(new Error(`demo server did not start: ${output}`)), 15000);
    child.stdout.on('data', (chunk) => {
      output += chunk;
      if (output.includes('listening')) {
        clearTimeout(timer);
        done(child);
      }
    });
    child.stderr.on('data', (chunk) => (output += chunk));
    child.once('exit', (code) => fail(new Error(`demo server exited with ${code}: ${output}`)));
  });
}

function stopServer(child) {
  return new Promise((done) => {
    if (child.exitCode !== null) return done();
    child.once('exit', done);
    child.kill('SIGKILL');
  });
}

let browser;
let port;
let server;

before(async () => {
  port = await freePort();
  server = await startServer(port);
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-dev-shm-usage',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  if (server) await stopServer(server);
});

async function openChat(name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error(`[${name}] page error:`, error));
  await page.goto(`http://127.0.0.1:${port}/?name=${name}`);
  await page.getByTestId('status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
  return page;
}

async function send(page, text) {
  await page.getByTestId('draft').fill(text);
  await page.getByRole('button', { name: 'Send' }).click();
}

/** The messages the server applied (not the page's own ones still being sent). */
function messages(page) {
  return page.getByTestId('message').allInnerTexts();
}

function message(page, text) {
  return page.getByTestId('message').filter({ hasText: text });
}

test('two pages chat, see vetoes, and survive a server restart', async () => {
  const alice = await openChat('alice');
  const bob = await openChat('bob');
  assert.equal(await alice.getByTestId('me').innerText(), 'alice');

  await send(alice, 'hello from alice');
  await message(bob, 'hello from alice').waitFor();
  await send(bob, 'hi alice, bob here');
  await message(alice, 'hi alice, bob here').waitFor();
  assert.deepEqual(await messages(alice), await messages(bob));
  await alice.screenshot({ path: join(shots, '1-alice-chatting.png') });

  // The server's interceptor refuses spam: the sender sees why, nobody sees the message.
  await send(alice, 'buy spam now');
  const refusal = alice.getByTestId('send-error');
  await refusal.waitFor();
  assert.match(await refusal.innerText(), /refused/);
  await alice.screenshot({ path: join(shots, '2-alice-vetoed.png') });
  assert.equal(await bob.getByText('buy spam now').count(), 0);

  // The server goes away; both pages show it, and a message sent meanwhile waits.
  await stopServer(server);
  await alice.getByTestId('status').filter({ hasText: 'Reconnecting' }).waitFor({ timeout: 15000 });
  await bob.getByTestId('status').filter({ hasText: 'Reconnecting' }).waitFor({ timeout: 15000 });
  await send(alice, 'sent while the server was down');
  await alice.getByTestId('pending-message').filter({ hasText: 'sending' }).waitFor();
  await alice.screenshot({ path: join(shots, '3-alice-offline.png') });

  // A new server process on the same port (its state starts empty): both pages
  // reconnect, resync, and the waiting message arrives exactly once.
  server = await startServer(port);
  for (const page of [alice, bob]) {
    await page.getByTestId('status').filter({ hasText: 'Connected' }).waitFor({ timeout: 30000 });
    await message(page, 'sent while the server was down').waitFor({ timeout: 15000 });
  }
  const afterRestart = await messages(alice);
  assert.deepEqual(afterRestart, await messages(bob));
  assert.equal(afterRestart.filter((m) => m.includes('sent while the server was down')).length, 1);
  await send(bob, 'back online');
  await message(alice, 'back online').waitFor();
  await alice.screenshot({ path: join(shots, '4-alice-after-restart.png') });
  await bob.screenshot({ path: join(shots, '4-bob-after-restart.png') });
});

test('two pages sending at the same moment, 20 times: every message lands, in one order', async () => {
  const alice = await openChat('alice-rush');
  const bob = await openChat('bob-rush');
  const texts = [];
  for (let round = 0; round < 20; round += 1) {
    const mine = [`rush ${round} from alice`, `rush ${round} from bob`];
    texts.push(...mine);
    await alice.getByTestId('draft').fill(mine[0]);
    await bob.getByTestId('draft').fill(mine[1]);
    // Both from the same state: a whole-list update would let one erase the other.
    await Promise.all([
      alice.getByRole('button', { name: 'Send' }).click(),
      bob.getByRole('button', { name: 'Send' }).click(),
    ]);
    for (const page of [alice, bob]) {
      for (const text of mine) await message(page, text).waitFor({ timeout: 10000 });
    }
  }
  const rushed = async (page) => (await messages(page)).filter((m) => m.includes('rush '));
  const seenByAlice = await rushed(alice);
  assert.equal(seenByAlice.length, 40);
  for (const text of texts) assert.equal(seenByAlice.filter((m) => m.endsWith(text)).length, 1, text);
  assert.deepEqual(await rushed(bob), seenByAlice, 'the same order on both pages');
  assert.equal(await alice.getByTestId('send-error').count(), 0);
  await alice.screenshot({ path: join(shots, '5-alice-rush.png') });
});

test('the package works without a bundler, as a plain ES module', async () => {
  // A folder with a page and a copy of the package, served by a second demo server.
  const folder = mkdtempSync(join(tmpdir(), 'no-bundler-'));
  cpSync(resolve(root, 'npm/index.js'), join(folder, 'server-state-sync-wasm/index.js'));
  cpSync(resolve(root, 'npm/pkg'), join(folder, 'server-state-sync-wasm/pkg'), { recursive: true });
  writeFileSync(
    join(folder, 'index.html'),
    `<!doctype html><meta charset="utf-8"><pre id="out">loading</pre>
<script type="module">
  import { Client } from './server-state-sync-wasm/index.js';
  const out = document.getElementById('out');
  try {
    const client = new Client('ws://' + location.host, 'plain-page');
    await client.onConnection();
    const state = await client.connectToState('demo-chat');
    const applied = await client.updateState({ chatMessages: [...state.chatMessages, { sender: 'plain', content: 'no bundler' }] });
    out.textContent = 'applied version ' + applied.version + ', ' + client.getState().chatMessages.length + ' message(s)';
  } catch (error) {
    out.textContent = 'failed: ' + error.message;
  }
</script>`,
  );
  const plainPort = await freePort();
  const plainServer = await startServer(plainPort, folder);
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`http://127.0.0.1:${plainPort}/`);
    await page.getByText(/^applied version/).waitFor({ timeout: 15000 });
    assert.match(await page.locator('#out').innerText(), /^applied version 1, 1 message\(s\)$/);
  } finally {
    await stopServer(plainServer);
  }
});

test('under StrictMode (development build) each page opens one connection', async () => {
  const devPort = await freePort();
  const devServer = await startServer(devPort, resolve(root, 'examples/react-chat/dist-dev'));
  try {
    const page = await (await browser.newContext()).newPage();
    const sockets = [];
    page.on('websocket', (socket) => sockets.push(socket.url()));
    await page.goto(`http://127.0.0.1:${devPort}/?name=strict`);
    await page.getByTestId('status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
    await send(page, 'strict mode works');
    await message(page, 'strict mode works').waitFor();
    await page.waitForTimeout(300);
    assert.equal(sockets.length, 1, `WebSockets opened: ${sockets.join(', ')}`);
  } finally {
    await stopServer(devServer);
  }
});
