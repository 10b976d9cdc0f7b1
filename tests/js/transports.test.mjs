// Every HTTP transport through its reference client, against the subcar
// binary: graphql-sse in both of its modes, the `eventsource` package
// (EventSource as browsers implement it) resuming with Last-Event-ID across
// a replica restart on Redis, and Apollo Client's HttpLink multipart
// subscriptions.
//
// Needs a built subcar binary (SUBCAR_BIN) and Redis on 127.0.0.1:6379
// (SUBCAR_TEST_REDIS_URL overrides it), which .ci/run starts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'graphql-sse';
import { EventSource } from 'eventsource';
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client/core/index.js';
import {
  INCIDENT_SCHEMA,
  freePorts,
  publishIncident,
  replica,
  subcarConfig,
  subscriptionCount,
  until,
} from './harness.mjs';

const REDIS = process.env.SUBCAR_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';
const SUBSCRIPTION = 'subscription { incidentUpdated { id title } }';

const children = new Set();
const dirs = [];
after(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function workdir() {
  const dir = mkdtempSync(join(tmpdir(), 'subcar-transports-'));
  dirs.push(dir);
  writeFileSync(join(dir, 'schema.graphql'), INCIDENT_SCHEMA);
  return dir;
}

/** One subcar on the memory bus with a real upstream for queries. */
async function single() {
  const dir = workdir();
  const ports = await freePorts();
  const upstream = await startUpstream();
  const server = 'drain_timeout = "1s"';
  const r = await replica(dir, 'subcar', subcarConfig({ ports, upstream: upstream.url, server }), ports, children);
  return { ports, url: `http://127.0.0.1:${ports.public}/graphql`, stop: r.stop, upstream };
}

/** A tiny GraphQL upstream answering `{ hello }` (queries over streams go to it). */
async function startUpstream() {
  const { createServer } = await import('node:http');
  const { graphql, buildSchema } = await import('graphql');
  const schema = buildSchema('type Query { hello: String }');
  const server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    const { query, variables } = JSON.parse(body || '{}');
    const result = await graphql({ schema, source: query, variableValues: variables, rootValue: { hello: () => 'world' } });
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(result));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  after(() => server.close());
  return { url: `http://127.0.0.1:${server.address().port}/graphql` };
}

/** Resolves with the first `n` values `iterate` yields, then stops it. */
async function take(iterator, n) {
  const values = [];
  for await (const v of iterator) {
    values.push(v);
    if (values.length === n) break;
  }
  return values;
}

for (const singleConnection of [false, true]) {
  const mode = singleConnection ? 'single connection' : 'distinct connections';
  test(`graphql-sse (${mode}) subscribes, queries and stops`, async () => {
    const s = await single();
    const client = createClient({ url: s.url, singleConnection, retryAttempts: 0 });
    try {
      const events = take(client.iterate({ query: SUBSCRIPTION }), 2);
      await until('the subscription is registered', async () => (await subscriptionCount(s.ports.admin)) === 1);
      await publishIncident(s.ports.webhook, 'a');
      await publishIncident(s.ports.webhook, 'b');
      const got = await events;
      assert.deepEqual(
        got.map((r) => r.data.incidentUpdated),
        [
          { id: 'a', title: 'incident a' },
          { id: 'b', title: 'incident b' },
        ],
      );
      // Breaking out of the loop stopped it at subcar too.
      await until('the subscription is gone', async () => (await subscriptionCount(s.ports.admin)) === 0);
      const [answer] = await take(client.iterate({ query: '{ hello }' }), 1);
      assert.deepEqual(answer, { data: { hello: 'world' } });
      const invalid = take(client.iterate({ query: 'subscription { incidentUpdated { nope } }' }), 1);
      if (singleConnection) {
        // The operation's own request answers: 400, as GraphQL over HTTP.
        await assert.rejects(invalid, /400/);
      } else {
        // In the stream: a `next` with the errors (EventSource cannot read a 400).
        const [result] = await invalid;
        assert.match(result.errors[0].message, /nope/);
      }
    } finally {
      client.dispose();
      await s.stop();
    }
  });
}

test('EventSource resumes with Last-Event-ID across a replica restart, losing nothing', async () => {
  const dir = workdir();
  const prefix = `subcar-es-${process.pid}-${Date.now()}`;
  const bus = `[bus]\nkind = "redis"\nurl = "${REDIS}"\nprefix = "${prefix}"`;
  const server = 'drain_timeout = "1s"';
  const [pa, pb] = [await freePorts(), await freePorts()];
  const config = (ports) => subcarConfig({ ports, upstream: 'http://127.0.0.1:9/graphql', server, extra: bus });
  let a = await replica(dir, 'a', config(pa), pa, children);
  const b = await replica(dir, 'b', config(pb), pb, children);
  const url = `http://127.0.0.1:${pa.public}/graphql?query=${encodeURIComponent(SUBSCRIPTION)}`;
  const es = new EventSource(url);
  const got = [];
  const ids = [];
  es.addEventListener('next', (e) => {
    got.push(JSON.parse(e.data).data.incidentUpdated.id);
    ids.push(e.lastEventId);
  });
  try {
    await until('subscribed on A', async () => (await subscriptionCount(pa.admin)) === 1);
    await publishIncident(pa.webhook, 'e1');
    await until('e1 arrives', () => got.length === 1);
    // A drains: its stream ends without `complete`, EventSource retries.
    await a.stop();
    await publishIncident(pb.webhook, 'e2');
    a = await replica(dir, 'a2', config(pa), pa, children);
    await until('EventSource is back on A', async () => (await subscriptionCount(pa.admin)) === 1);
    await publishIncident(pa.webhook, 'e3');
    await until('e2 and e3 arrive', () => got.length >= 3);
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(got, ['e1', 'e2', 'e3']);
    assert.equal(new Set(ids).size, 3, `distinct cursors ${ids}`);
  } finally {
    es.close();
    await a.stop();
    await b.stop();
  }
});

test('Apollo Client HttpLink receives multipart subscriptions and queries', async () => {
  const s = await single();
  const client = new ApolloClient({ link: new HttpLink({ uri: s.url }), cache: new InMemoryCache() });
  try {
    const got = [];
    const errors = [];
    const sub = client
      .subscribe({ query: gql(SUBSCRIPTION) })
      .subscribe({ next: (r) => got.push(r.data.incidentUpdated), error: (e) => errors.push(e) });
    await until('subscribed', async () => (await subscriptionCount(s.ports.admin)) === 1);
    await publishIncident(s.ports.webhook, 'm1');
    await publishIncident(s.ports.webhook, 'm2');
    await until('both events arrive', () => got.length === 2);
    assert.deepEqual(
      got.map((i) => i.id),
      ['m1', 'm2'],
    );
    assert.deepEqual(errors, []);
    sub.unsubscribe();
    await until('unsubscribing closes the stream', async () => (await subscriptionCount(s.ports.admin)) === 0);
    const { data } = await client.query({ query: gql('{ hello }') });
    assert.equal(data.hello, 'world');
  } finally {
    client.stop();
    await s.stop();
  }
});

test('Apollo Client sees the fatal part of a draining subcar as an error', async () => {
  const s = await single();
  const client = new ApolloClient({ link: new HttpLink({ uri: s.url }), cache: new InMemoryCache() });
  const outcome = new Promise((resolve) => {
    client.subscribe({ query: gql(SUBSCRIPTION) }).subscribe({
      next: () => {},
      error: (e) => resolve({ error: e }),
      complete: () => resolve({ complete: true }),
    });
  });
  await until('subscribed', async () => (await subscriptionCount(s.ports.admin)) === 1);
  await s.stop();
  const { error } = await outcome;
  assert.ok(error, 'the subscription errors');
  // The fatal part's errors are Apollo's protocol errors.
  assert.equal(error.protocolErrors?.[0]?.extensions?.code, 'SHUTTING_DOWN', JSON.stringify(error));
  client.stop();
});
