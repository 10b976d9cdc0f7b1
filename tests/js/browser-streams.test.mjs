// A real browser as the client: headless Chromium (playwright-core) opens a
// page served by this test that subscribes to subcar with the browser's own
// EventSource and WebSocket, with no client library. subcar is restarted
// while an event is published through a second replica (both on Redis):
// EventSource reconnects by itself with Last-Event-ID and receives every
// event once, in order.
//
// Chromium: /usr/bin/chromium (or CHROMIUM_PATH). Without it the test is
// skipped, unless SUBCAR_REQUIRE_BROWSER=1 (CI), where it fails. Needs
// Redis on 127.0.0.1:6379 (SUBCAR_TEST_REDIS_URL overrides it).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { INCIDENT_SCHEMA, freePorts, publishIncident, replica, subcarConfig, until } from './harness.mjs';

const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const haveBrowser = existsSync(chromiumPath);
if (!haveBrowser && process.env.SUBCAR_REQUIRE_BROWSER === '1') {
  throw new Error(`Chromium is required here (SUBCAR_REQUIRE_BROWSER=1) but ${chromiumPath} is missing: apt-get install chromium`);
}
const REDIS = process.env.SUBCAR_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

const children = new Set();
const dirs = [];
const closers = [];
after(async () => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  for (const close of closers) await close();
});

/** The page: EventSource and a bare graphql-transport-ws socket, results on `window`. */
function page(subcarPort) {
  const query = 'subscription { incidentUpdated { id } }';
  return `<!doctype html><meta charset="utf-8"><title>subcar in a browser</title>
<script>
window.sse = []; window.sseIds = []; window.ws = []; window.opens = 0;
const es = new EventSource('http://127.0.0.1:${subcarPort}/graphql?query=' + encodeURIComponent(${JSON.stringify(query)}));
es.onopen = () => { window.opens++; };
es.addEventListener('next', (e) => {
  window.sse.push(JSON.parse(e.data).data.incidentUpdated.id);
  window.sseIds.push(e.lastEventId);
});
const ws = new WebSocket('ws://127.0.0.1:${subcarPort}/graphql', 'graphql-transport-ws');
ws.onopen = () => ws.send(JSON.stringify({ type: 'connection_init' }));
ws.onmessage = (m) => {
  const msg = JSON.parse(m.data);
  if (msg.type === 'connection_ack') {
    ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: ${JSON.stringify(query)} } }));
  } else if (msg.type === 'next') {
    window.ws.push(msg.payload.data.incidentUpdated.id);
  }
};
</script>`;
}

test('a browser subscribes over EventSource and WebSocket, and EventSource resumes across a restart', { skip: !haveBrowser && 'no Chromium' }, async () => {
  const site = createServer();
  await new Promise((resolve) => site.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise((resolve) => site.close(resolve)));
  const origin = `http://127.0.0.1:${site.address().port}`;
  const dir = mkdtempSync(join(tmpdir(), 'subcar-browser-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'schema.graphql'), INCIDENT_SCHEMA);
  const prefix = `subcar-browser-${process.pid}-${Date.now()}`;
  const [pa, pb] = [await freePorts(), await freePorts()];
  const config = (ports) =>
    subcarConfig({
      ports,
      upstream: 'http://127.0.0.1:9/graphql',
      // The page's origin is another port: it must be listed.
      server: `drain_timeout = "1s"\ncors_origins = ["${origin}"]`,
      extra: `[bus]\nkind = "redis"\nurl = "${REDIS}"\nprefix = "${prefix}"`,
    });
  let a = await replica(dir, 'a', config(pa), pa, children);
  const b = await replica(dir, 'b', config(pb), pb, children);
  site.on('request', (req, res) => {
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(page(pa.public));
  });

  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const tab = await browser.newPage();
    const problems = [];
    tab.on('pageerror', (e) => problems.push(String(e)));
    await tab.goto(origin);
    const seen = () => tab.evaluate(() => ({ sse: window.sse, ws: window.ws, ids: window.sseIds, opens: window.opens }));
    const subscriptions = async (ports) =>
      (await (await fetch(`http://127.0.0.1:${ports.admin}/status`)).json()).subscriptions.total;
    await until('both of the page\'s subscriptions are registered', async () => (await subscriptions(pa)) === 2);
    await publishIncident(pa.webhook, 'e1');
    await until('e1 reaches the page both ways', async () => {
      const s = await seen();
      return s.sse.length === 1 && s.ws.length === 1;
    });
    // A stops; an event goes through B meanwhile; A comes back on its port.
    await a.stop();
    await publishIncident(pb.webhook, 'e2');
    a = await replica(dir, 'a2', config(pa), pa, children);
    await until('EventSource reconnected by itself', async () => (await subscriptions(pa)) >= 1);
    await publishIncident(pa.webhook, 'e3');
    await until('e2 and e3 reach EventSource', async () => (await seen()).sse.length >= 3);
    await new Promise((r) => setTimeout(r, 300));
    const s = await seen();
    assert.deepEqual(s.sse, ['e1', 'e2', 'e3']);
    assert.equal(new Set(s.ids).size, 3, `every event has its own cursor: ${s.ids}`);
    assert.ok(s.opens >= 2, 'EventSource opened again after the restart');
    assert.deepEqual(s.ws, ['e1']);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
    await a.stop();
    await b.stop();
  }
});
