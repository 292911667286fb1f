// End-to-end: the React chat (examples/react-chat/dist) served by the Rust demo server,
// two pages in headless Chromium. Run by scripts/test.sh after scripts/build-web.sh:
//   DEMO_SERVER=target/release/demo-server node --test tests/e2e/
// Screenshots, at a desktop (1280x800) and a phone (390x844) width, go to the folder
// printed at the start (E2E_SCREENSHOTS, or a temporary one).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { cpSync, mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
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
  rmSync(dataDir, { recursive: true, force: true });
});

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

// What went wrong in any page: errors thrown, requests that failed or got an error
// status (a missing favicon, say). Checked at the end.
const failures = [];

function watch(page, name) {
  page.on('pageerror', (error) => failures.push(`[${name}] page error: ${error.message}`));
  page.on('requestfailed', (request) =>
    failures.push(`[${name}] ${request.url()}: ${request.failure()?.errorText}`),
  );
  page.on('response', (response) => {
    if (response.status() >= 400) failures.push(`[${name}] ${response.url()}: HTTP ${response.status()}`);
  });
}

async function openChat(name, { viewport = DESKTOP, query = `?name=${name}` } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: viewport === PHONE ? 2 : 1 });
  const page = await context.newPage();
  watch(page, name);
  await page.goto(`http://127.0.0.1:${port}/${query}`);
  await page.getByTestId('status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
  return page;
}

/** Whether the element is inside the visible part of the message list. */
function inView(locator) {
  return locator.evaluate((element) => {
    const list = element.closest('ul').getBoundingClientRect();
    const box = element.getBoundingClientRect();
    return box.top >= list.top - 1 && box.bottom <= list.bottom + 1;
  });
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
  // Alice on a desktop, Bob on a phone.
  const alice = await openChat('alice');
  const bob = await openChat('bob', { viewport: PHONE });
  assert.equal(await alice.getByTestId('me').innerText(), 'alice');
  // The icon is in the page: no request for /favicon.ico.
  assert.match(await alice.locator('link[rel=icon]').getAttribute('href'), /^data:image\/svg\+xml,/);

  await bob.getByText('No messages yet').waitFor();
  await bob.screenshot({ path: join(shots, '0-bob-empty-phone.png') });

  await send(alice, 'hello from alice');
  await message(bob, 'hello from alice').waitFor();
  await send(bob, 'hi alice, bob here');
  await message(alice, 'hi alice, bob here').waitFor();
  assert.deepEqual(await messages(alice), await messages(bob));
  // Each message shows when it was sent.
  const sentAt = Date.parse(await message(bob, 'hello from alice').getByTestId('sent-at').getAttribute('datetime'));
  assert.ok(Math.abs(Date.now() - sentAt) < 60000, `sent at ${new Date(sentAt).toISOString()}`);
  await alice.screenshot({ path: join(shots, '1-alice-chatting-desktop.png') });
  await bob.screenshot({ path: join(shots, '1-bob-chatting-phone.png') });

  // The server's interceptor refuses spam: the sender sees why, nobody sees the message,
  // and the text is back in the box, to be edited and sent again.
  await send(alice, 'buy spam now');
  const refusal = alice.getByTestId('send-error');
  await refusal.waitFor();
  assert.match(await refusal.innerText(), /refused/);
  assert.equal(await alice.getByTestId('draft').inputValue(), 'buy spam now');
  await alice.screenshot({ path: join(shots, '2-alice-vetoed-desktop.png') });
  assert.equal(await bob.getByText('buy spam now').count(), 0);
  await send(alice, 'buy eggs now');
  await message(bob, 'buy eggs now').waitFor();
  assert.equal(await alice.getByTestId('send-error').count(), 0);
  assert.equal(await alice.getByTestId('draft').inputValue(), '');

  // The server goes away; both pages show it, and a message sent meanwhile waits.
  await stopServer(server);
  await alice.getByTestId('status').filter({ hasText: 'Reconnecting' }).waitFor({ timeout: 15000 });
  await bob.getByTestId('status').filter({ hasText: 'Reconnecting' }).waitFor({ timeout: 15000 });
  await send(alice, 'sent while the server was down');
  await alice.getByTestId('pending-message').filter({ hasText: 'sending' }).waitFor();
  await alice.screenshot({ path: join(shots, '3-alice-offline-desktop.png') });

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
  await alice.screenshot({ path: join(shots, '4-alice-after-restart-desktop.png') });
  await bob.screenshot({ path: join(shots, '4-bob-after-restart-phone.png') });
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
  await alice.screenshot({ path: join(shots, '5-alice-rush-desktop.png') });
});

test('the newest message stays in view, unless the reader scrolled up', async () => {
  const dave = await openChat('dave');
  // More messages than a phone shows (the earlier tests left some already).
  for (let i = 0; i < 15; i += 1) await send(dave, `filler ${i}`);
  await message(dave, 'filler 14').waitFor();

  // A page that joins late shows the newest messages, not the oldest.
  const carol = await openChat('carol', { viewport: PHONE });
  const list = carol.getByTestId('messages');
  await message(carol, 'filler 14').waitFor();
  assert.ok(await list.evaluate((el) => el.scrollHeight > el.clientHeight), 'the list overflows');
  assert.ok(await inView(message(carol, 'filler 14')), 'the newest message is in view on joining');
  await send(dave, 'a new one');
  await message(carol, 'a new one').waitFor();
  assert.ok(await inView(message(carol, 'a new one')), 'a new message scrolls into view');

  // Carol scrolls up to read: a new message does not pull her down, a button offers to.
  await list.evaluate((el) => el.scrollTo(0, 0));
  await carol.getByTestId('jump').waitFor();
  await send(dave, 'while carol reads');
  await message(carol, 'while carol reads').waitFor({ state: 'attached' });
  assert.equal(await inView(message(carol, 'while carol reads')), false);
  assert.equal(await list.evaluate((el) => el.scrollTop), 0);
  await carol.screenshot({ path: join(shots, '6-carol-scrolled-up-phone.png') });
  await carol.getByTestId('jump').click();
  assert.ok(await inView(message(carol, 'while carol reads')));

  // Her own message always scrolls into view.
  await list.evaluate((el) => el.scrollTo(0, 0));
  await carol.getByTestId('jump').waitFor();
  await send(carol, 'carol here');
  await message(carol, 'carol here').waitFor();
  assert.ok(await inView(message(carol, 'carol here')));
  await carol.screenshot({ path: join(shots, '6-carol-newest-phone.png') });
});

test('a person picks a name, which the page remembers', async () => {
  const erin = await openChat('erin');
  // No ?name=: the page makes one up.
  const guest = await openChat('guest', { viewport: PHONE, query: '' });
  assert.match(await guest.getByTestId('me').innerText(), /^guest-\d+$/);
  await guest.getByTestId('me').click();
  await guest.getByTestId('name-input').fill('Frank');
  await guest.getByTestId('name-input').press('Enter');
  assert.equal(await guest.getByTestId('me').innerText(), 'Frank');
  await guest.getByTestId('status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
  await send(guest, 'Frank has a name now');
  const seen = message(erin, 'Frank has a name now');
  await seen.waitFor();
  assert.match(await seen.innerText(), /^Frank\b/);
  await guest.reload();
  await guest.getByTestId('status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
  assert.equal(await guest.getByTestId('me').innerText(), 'Frank');
  await guest.screenshot({ path: join(shots, '7-frank-named-phone.png') });
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
    rmSync(folder, { recursive: true, force: true });
  }
});

test('under StrictMode (development build) each page opens one connection', async () => {
  const devPort = await freePort();
  const devServer = await startServer(devPort, resolve(root, 'examples/react-chat/dist-dev'));
  try {
    const page = await (await browser.newContext()).newPage();
    watch(page, 'strict');
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

/** Appends `items` to the chat over a raw WebSocket from `page`, as any client could; the server's answer. */
function rawAppend(page, items) {
  return page.evaluate(
    (items) =>
      new Promise((done, fail) => {
        const socket = new WebSocket(`ws://${location.host}/?identifier=raw&token=`);
        socket.onopen = () => socket.send(JSON.stringify({ type: 2, data: { stateIdentifier: 'demo-chat' } }));
        socket.onmessage = (event) => {
          const message = JSON.parse(event.data);
          if (message.type === 7) {
            const ops = { chatMessages: { append: items, max: 100 } };
            socket.send(JSON.stringify({ type: 3, data: { updates: {}, requestId: 1, ops } }));
          } else if (message.data?.requestId === 1) {
            socket.close();
            done(message);
          }
        };
        setTimeout(() => fail(new Error('no answer')), 10000);
      }),
    items,
  );
}

test('messages from other clients: a time a Date cannot hold is refused, a missing one shows none', async () => {
  const grace = await openChat('grace');
  const refused = await rawAppend(grace, [{ sender: 'mallory', content: 'boom', sentAt: 1e300 }]);
  assert.equal(refused.type, 9, JSON.stringify(refused));
  assert.equal(refused.data.reason, 'vetoed');
  const applied = await rawAppend(grace, [{ sender: 'terminal', content: 'no time here' }]);
  assert.equal(applied.type, 3, JSON.stringify(applied));
  await message(grace, 'no time here').waitFor();
  assert.equal(await message(grace, 'no time here').getByTestId('sent-at').count(), 0);
  // The page still works (a Date out of range used to blank it).
  await send(grace, 'still here');
  await message(grace, 'still here').getByTestId('sent-at').waitFor();
});

test('where localStorage is blocked the page still works, without remembering the name', async () => {
  const context = await browser.newContext({ viewport: DESKTOP });
  await context.addInitScript(() => {
    Object.defineProperty(window, 'localStorage', {
      get() {
        throw new DOMException('Access is denied for this document.', 'SecurityError');
      },
    });
  });
  const page = await context.newPage();
  watch(page, 'no-storage');
  await page.goto(`http://127.0.0.1:${port}/`);
  await page.getByTestId('status').filter({ hasText: 'Connected' }).waitFor({ timeout: 15000 });
  assert.match(await page.getByTestId('me').innerText(), /^guest-\d+$/);
  await send(page, 'no storage here');
  await message(page, 'no storage here').waitFor();
});

test('presence: pages see who is online, and who is typing until they send or stop', async () => {
  const hana = await openChat('hana');
  const ivan = await openChat('ivan', { viewport: PHONE });
  const online = (page, text) => page.getByTestId('online-user').filter({ hasText: text });
  await online(hana, 'ivan').waitFor();
  await online(ivan, 'hana').waitFor();
  assert.match(await hana.getByTestId('online-me').innerText(), /hana\s*\(you\)/);
  assert.equal(await online(hana, 'hana').count(), 0, 'this page is "you", not another person');

  // Hana types: Ivan sees it, and stops seeing it once she sent (Enter keeps the focus
  // in the box, so it is the sending that ends it).
  const typingOf = (page, text) => page.getByTestId('typing').filter({ hasText: text });
  await hana.getByTestId('draft').pressSequentially('hello ivan', { delay: 20 });
  await typingOf(ivan, 'hana is typing…').waitFor({ timeout: 5000 });
  assert.equal(await typingOf(hana, 'hana').count(), 0, 'nobody is told they are typing themselves');
  await ivan.screenshot({ path: join(shots, '8-ivan-sees-hana-typing-phone.png') });
  await hana.getByTestId('draft').press('Enter');
  await message(ivan, 'hello ivan').waitFor();
  await typingOf(ivan, 'hana').waitFor({ state: 'detached', timeout: 5000 });

  // She types again and stops without sending: it ends a few seconds after her last key.
  await hana.getByTestId('draft').pressSequentially('never mind', { delay: 20 });
  const lastKey = Date.now();
  await typingOf(ivan, 'hana is typing…').waitFor({ timeout: 5000 });
  await typingOf(ivan, 'hana').waitFor({ state: 'detached', timeout: 10000 });
  const after = Date.now() - lastKey;
  assert.ok(after >= 2500, `typing ended ${after} ms after the last key`);
  assert.equal(await hana.getByTestId('draft').inputValue(), 'never mind');

  // Hana in a second browser: her first page shows it apart from "you"; it goes when
  // that one closes.
  const second = await openChat('hana');
  await online(hana, '(another tab)').waitFor();
  await online(second, 'ivan').waitFor();
  await online(ivan, 'hana').filter({ hasText: '×2' }).waitFor();
  await hana.screenshot({ path: join(shots, '8-hana-online-desktop.png') });
  await second.context().close();
  await online(hana, '(another tab)').waitFor({ state: 'detached', timeout: 10000 });
  await online(ivan, 'hana').filter({ hasNotText: '×2' }).waitFor();
});

test('no page had an error or a failed request', () => {
  assert.deepEqual(failures, []);
});
