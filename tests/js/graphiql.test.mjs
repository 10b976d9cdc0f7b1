// GraphiQL in a real browser: headless Chromium (playwright-core) opens
// subcar's `GET /graphql` page, whose assets come from the `graphiql`,
// `react`, `react-dom` and `graphql-ws` npm packages served by this test
// as `server.graphiql.assets_url`; it runs a subscription, the test posts a
// webhook event, and the event shows in GraphiQL's result pane.
//
// Chromium: /usr/bin/chromium (or CHROMIUM_PATH). Without it the test is
// skipped, unless SUBCAR_REQUIRE_BROWSER=1 (CI), where it fails.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { INCIDENT_SCHEMA, freePort, freePorts, startSubcar, subcarConfig, waitOk } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(chromiumPath);
if (!haveBrowser && process.env.SUBCAR_REQUIRE_BROWSER === '1') {
  throw new Error(`Chromium is required here (SUBCAR_REQUIRE_BROWSER=1) but ${chromiumPath} is missing: apt-get install chromium`);
}

let subcar;
let assets;
let publicPort;
let webhookPort;
let adminPort;

/** `/<package>@<version>/<file>` from node_modules, the way unpkg lays it out. */
function serveAssets() {
  const types = { '.js': 'text/javascript', '.css': 'text/css', '.map': 'application/json' };
  return createServer((req, res) => {
    const match = /^\/((?:@[^/]+\/)?[^/@]+)@[^/]+\/(.+)$/.exec(new URL(req.url, 'http://x').pathname);
    const file = match && normalize(join(here, 'node_modules', match[1], match[2]));
    if (!file || !file.startsWith(join(here, 'node_modules')) || !existsSync(file)) {
      res.statusCode = 404;
      res.end();
      return;
    }
    const ext = file.slice(file.lastIndexOf('.'));
    res.setHeader('content-type', types[ext] ?? 'application/octet-stream');
    res.end(readFileSync(file));
  });
}

before(async () => {
  if (!haveBrowser) return;
  const bin = process.env.SUBCAR_BIN;
  assert.ok(bin, 'set SUBCAR_BIN to the subcar binary');
  assets = serveAssets();
  await new Promise((resolve) => assets.listen(0, '127.0.0.1', resolve));
  const ports = await freePorts();
  publicPort = ports.public;
  webhookPort = ports.webhook;
  adminPort = ports.admin;
  const dir = mkdtempSync(join(tmpdir(), 'subcar-graphiql-'));
  writeFileSync(join(dir, 'schema.graphql'), INCIDENT_SCHEMA);
  subcar = startSubcar(
    dir,
    'subcar',
    subcarConfig({
      ports,
      upstream: `http://127.0.0.1:${await freePort()}/graphql`,
      extra: `[server.graphiql]\nassets_url = "http://127.0.0.1:${assets.address().port}"`,
    }),
  );
  await waitOk(publicPort);
});

after(() => {
  subcar?.kill('SIGTERM');
  assets?.close();
});

/**
 * Opens GraphiQL (`search` added to its URL), runs a subscription, waits
 * for a posted event in the result pane, and checks that it came over
 * `transport` (as `/status` names it).
 */
async function subscribeInGraphiql(search, marker, transport) {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const page = await browser.newPage();
    const problems = [];
    page.on('pageerror', (e) => problems.push(String(e)));
    const query = 'subscription { incidentUpdated { id title } }';
    await page.goto(`http://127.0.0.1:${publicPort}/graphql?query=${encodeURIComponent(query)}${search}`);
    await page.waitForSelector('.graphiql-execute-button', { timeout: 20000 });
    await page.click('.graphiql-execute-button');
    // Events posted before the subscription is registered reach nobody;
    // keep posting until one shows.
    for (let i = 0; ; i++) {
      const res = await fetch(`http://127.0.0.1:${webhookPort}/webhook`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'webhook-id': `evt_${marker}_${i}` },
        body: JSON.stringify({ topic: 'incident.updated', payload: { id: `42-${i}`, title: marker } }),
      });
      assert.equal(res.status, 202);
      const text = await page.locator('.result-window').innerText();
      if (text.includes(marker)) {
        assert.match(text, /"incidentUpdated"/);
        const status = await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json();
        assert.ok(status.connections[transport] >= 1, JSON.stringify(status.connections));
        break;
      }
      assert.ok(i < 50, `the event never showed in the result pane: ${text} ${problems.join('; ')}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
}

test('GraphiQL runs a subscription and shows the event', { skip: !haveBrowser && 'no Chromium' }, async () => {
  await subscribeInGraphiql('', 'seen in the browser', 'graphql-transport-ws');
});

test('GraphiQL with ?transport=sse runs it over GraphQL over SSE', { skip: !haveBrowser && 'no Chromium' }, async () => {
  await subscribeInGraphiql('&transport=sse', 'seen over SSE', 'sse');
});

test('GraphiQL is not what API clients get', { skip: !haveBrowser && 'no Chromium' }, async () => {
  const res = await fetch(`http://127.0.0.1:${publicPort}/graphql?query=${encodeURIComponent('{ __typename }')}`, {
    headers: { accept: 'application/json' },
  });
  assert.notEqual(res.headers.get('content-type'), 'text/html; charset=utf-8');
  const page = await fetch(`http://127.0.0.1:${publicPort}/graphql`, { headers: { accept: 'text/html' } });
  assert.equal(page.status, 200);
  assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
  assert.match(await page.text(), /graphiql@3\.8\.3\/graphiql\.min\.js/);
});
