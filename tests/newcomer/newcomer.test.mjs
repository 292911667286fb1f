// The newcomer's path, as npm/README.md tells it: a new Vite + React app in a temporary
// folder outside the repository installs the tarball that scripts/build-web.sh made,
// uses the README's React example as it is written, builds with Vite, and chats through
// the demo server in headless Chromium. Then the same app installs the package folder
// (a symlink) with the README's Vite config for that case, and builds and runs again.
// Run by scripts/test.sh after scripts/build-web.sh and the demo server's build:
//   DEMO_SERVER=target/release/demo-server node --test tests/newcomer/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const root = resolve(import.meta.dirname, '../..');
const serverBinary = resolve(root, process.env.DEMO_SERVER ?? 'target/release/demo-server');
const { version } = JSON.parse(readFileSync(join(root, 'npm/package.json'), 'utf8'));
const tarball = join(root, `npm/server-state-sync-wasm-${version}.tgz`);
// The versions the repository's own React chat is tested with (and the npm cache has).
const chat = JSON.parse(readFileSync(join(root, 'examples/react-chat/package.json'), 'utf8'));
const readme = readFileSync(join(root, 'npm/README.md'), 'utf8');

/** The code block that follows `<!-- newcomer-test: NAME -->` in npm/README.md. */
function readmeSnippet(name) {
  const marker = `<!-- newcomer-test: ${name} -->\n`;
  const at = readme.indexOf(marker);
  assert.notEqual(at, -1, `npm/README.md has no ${marker.trim()}`);
  const block = /^```[a-z]*\n([\s\S]*?)\n```\n/.exec(readme.slice(at + marker.length));
  assert.ok(block, `no code block after ${marker.trim()}`);
  return `${block[1]}\n`;
}

const app = mkdtempSync(join(tmpdir(), 'newcomer-app-'));
assert.ok(relative(root, app).startsWith('..'), 'the app is outside the repository');

function run(command, args) {
  try {
    return execFileSync(command, args, { cwd: app, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    throw new Error(`${command} ${args.join(' ')} failed:\n${error.stdout}\n${error.stderr}`);
  }
}

function npmInstall(...packages) {
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error', ...packages]);
}

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

const servers = [];

async function startServer(folder) {
  const port = await freePort();
  const child = spawn(serverBinary, ['--port', String(port), '--static', folder, '--memory'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: 'warn' },
  });
  servers.push(child);
  await new Promise((done, fail) => {
    let output = '';
    const timer = setTimeout(() => fail(new Error(`demo server did not start: ${output}`)), 15000);
    child.stdout.on('data', (chunk) => {
      output += chunk;
      if (output.includes('listening')) {
        clearTimeout(timer);
        done();
      }
    });
    child.stderr.on('data', (chunk) => (output += chunk));
    child.once('exit', (code) => fail(new Error(`demo server exited with ${code}: ${output}`)));
  });
  return port;
}

let browser;

before(async () => {
  assert.ok(existsSync(tarball), `${tarball} is missing: run ./scripts/build-web.sh first`);
  // What `npm create vite@latest -- --template react` gives, reduced to what matters.
  writeFileSync(
    join(app, 'package.json'),
    `${JSON.stringify(
      {
        name: 'my-chat',
        private: true,
        version: '0.0.0',
        type: 'module',
        scripts: { dev: 'vite', build: 'vite build' },
        dependencies: { react: chat.dependencies.react, 'react-dom': chat.dependencies['react-dom'] },
        devDependencies: {
          vite: chat.devDependencies.vite,
          '@vitejs/plugin-react': chat.devDependencies['@vitejs/plugin-react'],
        },
      },
      null,
      2,
    )}\n`,
  );
  writeFileSync(
    join(app, 'vite.config.js'),
    `import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

export default defineConfig({
  plugins: [react()],
});
`,
  );
  writeFileSync(
    join(app, 'index.html'),
    `<!doctype html>
<html lang="en">
  <head>
    <meta charset="UTF-8" />
    <link rel="icon" href="data:," />
    <meta name="viewport" content="width=device-width, initial-scale=1.0" />
    <title>my chat</title>
  </head>
  <body>
    <div id="root"></div>
    <script type="module" src="/src/main.jsx"></script>
  </body>
</html>
`,
  );
  mkdirSync(join(app, 'src'));
  writeFileSync(
    join(app, 'src/main.jsx'),
    `import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { ChatWidget } from './ChatWidget.jsx';

const user = new URLSearchParams(window.location.search).get('name') ?? 'newcomer';
createRoot(document.getElementById('root')).render(
  <StrictMode>
    <ChatWidget user={user} />
  </StrictMode>,
);
`,
  );
  // The README's example as written; only its server address changes, to the server
  // that serves the page (the test's ports are free ones, not 5000).
  const widget = readmeSnippet('src/ChatWidget.jsx');
  assert.equal(widget.split("'ws://localhost:5000'").length, 2, 'the example names its server once');
  writeFileSync(
    join(app, 'src/ChatWidget.jsx'),
    widget.replace("'ws://localhost:5000'", '`ws://${window.location.host}`'),
  );
  npmInstall();

  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
});

after(async () => {
  await browser?.close();
  for (const child of servers) child.kill('SIGKILL');
  // NEWCOMER_KEEP=1 keeps the app, to look at it.
  if (process.env.NEWCOMER_KEEP) console.log(`the app: ${app}`);
  else rmSync(app, { recursive: true, force: true });
});

/** Opens the app as `name`; every request of the page must succeed. */
async function open(port, name) {
  const page = await (await browser.newContext()).newPage();
  const failures = [];
  page.on('pageerror', (error) => failures.push(`page error: ${error.message}`));
  page.on('requestfailed', (request) => failures.push(`${request.url()}: ${request.failure()?.errorText}`));
  page.on('response', (response) => {
    if (response.status() >= 400) failures.push(`${response.url()}: HTTP ${response.status()}`);
  });
  await page.goto(`http://127.0.0.1:${port}/?name=${name}`);
  await page.getByText('connected', { exact: true }).waitFor({ timeout: 15000 });
  return { page, failures };
}

/** Two people chat through the demo server with the app built into `dist`. */
async function chatWith(dist) {
  const port = await startServer(join(app, dist));
  const alice = await open(port, 'alice');
  const bob = await open(port, 'bob');
  await alice.page.getByLabel('Message').fill(`hello from ${dist}`);
  await alice.page.getByRole('button', { name: 'Send' }).click();
  await bob.page.getByText(`alice hello from ${dist}`).waitFor({ timeout: 10000 });
  await alice.page.getByText(`alice hello from ${dist}`).waitFor();
  assert.equal(await alice.page.getByLabel('Message').inputValue(), '', 'a sent message leaves the box');

  // A refusal is shown, and the text stays in the box.
  await bob.page.getByLabel('Message').fill('cheap spam');
  await bob.page.getByRole('button', { name: 'Send' }).click();
  await bob.page.getByRole('alert').filter({ hasText: 'Not sent (vetoed)' }).waitFor({ timeout: 10000 });
  assert.equal(await bob.page.getByLabel('Message').inputValue(), 'cheap spam');
  assert.equal(await alice.page.getByText('cheap spam').count(), 0);

  assert.deepEqual([...alice.failures, ...bob.failures], []);
}

test('a new Vite + React app installs the tarball and runs the README example', async () => {
  npmInstall(tarball);
  assert.ok(!lstatSync(join(app, 'node_modules/server-state-sync-wasm')).isSymbolicLink());
  run('npx', ['vite', 'build', '--logLevel', 'warn']);
  await chatWith('dist');
});

test('the same app installs the package folder (a symlink) and builds with the README config', async () => {
  npmInstall(join(root, 'npm'));
  assert.ok(lstatSync(join(app, 'node_modules/server-state-sync-wasm')).isSymbolicLink());
  writeFileSync(join(app, 'vite.config.js'), readmeSnippet('vite.config.js for a linked package'));
  run('npx', ['vite', 'build', '--logLevel', 'warn', '--outDir', 'dist-linked']);
  await chatWith('dist-linked');
});
