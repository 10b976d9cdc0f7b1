// subcar through the reference legacy client: subscriptions-transport-ws's
// SubscriptionClient (over the `ws` package) speaks the `graphql-ws`
// subprotocol, subscribes, receives an event POSTed to the webhook, runs a
// query over the socket and sees validation errors as GraphQL errors. A
// second subcar with auth.mode = "jwt" reads the token from the client's
// connectionParams.
//
// Needs a built subcar binary: SUBCAR_BIN=/path/to/subcar node --test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import transport from 'subscriptions-transport-ws';
import WebSocket from 'ws';
import * as harness from './harness.mjs';

const { SubscriptionClient } = transport;

const JWT_SECRET = 'js-legacy-jwt-secret-0123456789';

let subcar;
let authed;
let upstream;
let ports;
let authedPorts;

const jwt = (claims) => harness.jwt(claims, JWT_SECRET);

before(async () => {
  assert.ok(process.env.SUBCAR_BIN, 'set SUBCAR_BIN to the subcar binary');
  let upstreamUrl;
  ({ server: upstream, url: upstreamUrl } = await harness.startHelloUpstream());
  ports = await harness.freePorts();
  const dir = mkdtempSync(join(tmpdir(), 'subcar-legacy-'));
  writeFileSync(join(dir, 'schema.graphql'), harness.COUNTER_SCHEMA);
  subcar = harness.startSubcar(dir, 'legacy', harness.subcarConfig({ ports, upstream: upstreamUrl }));
  authedPorts = await harness.freePorts();
  const opsOnly = harness.opsOnlyConfig({ ports: authedPorts, upstream: upstreamUrl, secret: JWT_SECRET });
  authed = harness.startSubcar(dir, 'legacy-authed', opsOnly);
  await harness.waitOk(ports.public);
  await harness.waitOk(authedPorts.public);
});

after(async () => {
  subcar?.kill('SIGTERM');
  authed?.kill('SIGTERM');
  upstream?.close();
});

function client({ port = ports.public, connectionParams = {}, connectionCallback } = {}) {
  return new SubscriptionClient(
    `ws://127.0.0.1:${port}/graphql`,
    { reconnect: false, lazy: false, connectionParams, connectionCallback },
    WebSocket,
  );
}

/** The results of `query` as they come: `next()` resolves with the next
 * one, `{ done: true }` after `complete`, or rejects on `error`. */
function results(c, query) {
  const queue = [];
  const waiting = [];
  const push = (item) => (waiting.length ? waiting.shift()(item) : queue.push(item));
  const subscription = c.request({ query }).subscribe({
    next: (value) => push({ value }),
    error: (error) => push({ error }),
    complete: () => push({ done: true }),
  });
  return {
    async next() {
      const item = queue.length ? queue.shift() : await new Promise((r) => waiting.push(r));
      if (item.error) throw item.error;
      return item;
    },
    stop: () => subscription.unsubscribe(),
  };
}

/** A query over the socket: its only result. The session handles messages
 * in order, so once it returns, earlier subscriptions are registered. */
async function query(c, q) {
  const r = results(c, q);
  const { value } = await r.next();
  assert.deepEqual(await r.next(), { done: true });
  return value;
}

async function publish(event, to = ports) {
  const res = await fetch(`http://127.0.0.1:${to.webhook}/webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(event),
  });
  assert.equal(res.status, 202);
}

test('queries over the legacy socket are answered with data + complete', async () => {
  const c = client();
  try {
    assert.deepEqual(await query(c, '{ hello }'), { data: { hello: 'world' } });
  } finally {
    c.close();
  }
});

test('events published to the webhook reach a legacy subscriber', async () => {
  const c = client();
  try {
    const counters = results(c, 'subscription { counter }');
    const incidents = results(c, 'subscription { incidentUpdated(severity: "P1") { id title } }');
    await query(c, '{ hello }');
    await publish({ topic: 'counter', payload: 1 });
    await publish({ topic: 'incident.updated', payload: { id: '9', title: 'low', severity: 'P3' } });
    await publish({ topic: 'incident.updated', payload: { id: '7', title: 'db down', severity: 'P1' } });
    await publish({ topic: 'counter', payload: 2 });
    assert.deepEqual((await counters.next()).value, { data: { counter: 1 } });
    assert.deepEqual((await counters.next()).value, { data: { counter: 2 } });
    // The filter by argument: only the P1 incident.
    assert.deepEqual((await incidents.next()).value, {
      data: { incidentUpdated: { id: '7', title: 'db down' } },
    });
    counters.stop();
    incidents.stop();
  } finally {
    c.close();
  }
});

test('validation errors reach the legacy client as GraphQL errors', async () => {
  const c = client();
  try {
    const result = await query(c, 'subscription { nope }');
    assert.ok(Array.isArray(result.errors) && result.errors.length > 0, JSON.stringify(result));
    assert.equal(typeof result.errors[0].message, 'string');
  } finally {
    c.close();
  }
});

test('a token in connectionParams is checked, and allow rules apply', async () => {
  const ops = client({
    port: authedPorts.public,
    connectionParams: { Authorization: `Bearer ${jwt({ sub: 'u1', role: 'ops' })}` },
  });
  const dev = client({
    port: authedPorts.public,
    connectionParams: { Authorization: `Bearer ${jwt({ sub: 'u2', role: 'dev' })}` },
  });
  try {
    const allowed = results(ops, 'subscription { incidentUpdated { id } }');
    await query(ops, '{ hello }');
    await publish({ topic: 'incident.updated', payload: { id: '1' } }, authedPorts);
    assert.deepEqual((await allowed.next()).value, { data: { incidentUpdated: { id: '1' } } });
    // Not allowed: an `error`, which the client hands to the observer.
    await assert.rejects(results(dev, 'subscription { incidentUpdated { id } }').next(), (e) => {
      assert.equal(e.extensions.code, 'FORBIDDEN');
      return true;
    });
  } finally {
    ops.close();
    dev.close();
  }
});

test('refused credentials are a connection_error', async () => {
  const refused = new Promise((resolve) => {
    const c = client({
      port: authedPorts.public,
      connectionParams: { Authorization: 'Bearer garbage' },
      connectionCallback: (error) => {
        c.close();
        resolve(error);
      },
    });
  });
  const error = await refused;
  assert.match(error.message, /Forbidden/);
});
