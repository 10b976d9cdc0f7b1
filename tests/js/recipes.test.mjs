// docs/clients.md, run as users copy it: the graphql-ws resume block is
// extracted verbatim from the page, imported, and driven against two subcar
// replicas on Redis. Replica A is stopped between two events, one event is
// published through replica B meanwhile, A is started again on the same
// port, and the pattern must deliver every event once, in order.
//
// Needs a built subcar binary (SUBCAR_BIN) and Redis on 127.0.0.1:6379
// (SUBCAR_TEST_REDIS_URL overrides it), which .ci/run starts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import WebSocket from 'ws';
import { INCIDENT_SCHEMA, freePorts, publishIncident, replica, subcarConfig, until } from './harness.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const REDIS = process.env.SUBCAR_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

/** The fenced block between `<!-- snippet: NAME -->` and `<!-- /snippet -->`. */
function snippet(markdown, name) {
  const start = markdown.indexOf(`<!-- snippet: ${name} -->`);
  assert.ok(start >= 0, `docs/clients.md has the snippet ${name}`);
  const end = markdown.indexOf('<!-- /snippet -->', start);
  const block = markdown.slice(start, end).match(/```js\n([\s\S]*?)```/);
  assert.ok(block, `the snippet ${name} is a js code block`);
  return block[1];
}

const children = new Set();
const dirs = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A subcar replica on Redis, events on `prefix`. */
function replicaOn(dir, name, prefix, ports) {
  const config = subcarConfig({
    ports,
    upstream: 'http://127.0.0.1:9/graphql',
    extra: `[bus]\nkind = "redis"\nurl = "${REDIS}"\nprefix = "${prefix}"`,
  });
  return replica(dir, name, config, ports, children);
}

test('the graphql-ws resume recipe of docs/clients.md loses no event across a restart', async () => {
  assert.ok(process.env.SUBCAR_BIN, 'set SUBCAR_BIN to the subcar binary');
  const markdown = readFileSync(join(here, '../../docs/clients.md'), 'utf8');
  // Written next to this file so that `graphql-ws` resolves from tests/js.
  const module = join(here, `.recipe-resume-${process.pid}.mjs`);
  writeFileSync(module, snippet(markdown, 'graphql-ws-resume'));
  let subscribeWithResume;
  try {
    ({ subscribeWithResume } = await import(pathToFileURL(module).href));
  } finally {
    rmSync(module, { force: true });
  }

  const dir = mkdtempSync(join(tmpdir(), 'subcar-recipes-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'schema.graphql'), INCIDENT_SCHEMA);
  const prefix = `js-recipes-${process.pid}-${Date.now()}`;
  const portsA = await freePorts();
  const portsB = await freePorts();
  let a = await replicaOn(dir, 'a', prefix, portsA);
  const b = await replicaOn(dir, 'b', prefix, portsB);

  const seen = [];
  const errors = [];
  const stop = subscribeWithResume({
    url: `ws://127.0.0.1:${portsA.public}/graphql`,
    query: 'subscription { incidentUpdated { id title } }',
    webSocketImpl: WebSocket,
    onEvent: (result) => seen.push(result.data.incidentUpdated.id),
    onError: (e) => errors.push(e),
  });
  try {
    // The subscription is registered once an event published now arrives.
    for (let i = 0; seen.length === 0; i++) {
      assert.ok(i < 100, 'the first event arrived');
      await publishIncident(portsA.webhook, `warm-${i}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    await publishIncident(portsA.webhook, 'e1');
    await until('e1 arrived', () => seen.includes('e1'));

    await a.stop();
    await publishIncident(portsB.webhook, 'e2');
    a = await replicaOn(dir, 'a2', prefix, portsA);
    await until('e2, missed while A was down, arrived after the reconnect', () => seen.includes('e2'));
    await publishIncident(portsA.webhook, 'e3');
    await until('e3 arrived', () => seen.includes('e3'));

    assert.deepEqual(errors, [], 'no GraphQL error ended the subscription');
    assert.deepEqual(seen.filter((id) => !id.startsWith('warm-')), ['e1', 'e2', 'e3'], 'in order');
    assert.equal(new Set(seen).size, seen.length, `no event twice: ${seen}`);
  } finally {
    stop();
    await a.stop();
    await b.stop();
  }
});
