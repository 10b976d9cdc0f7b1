// subcar through the reference npm clients: the graphql-ws client
// (createClient over the `ws` package) subscribes, events are signed with
// the `standardwebhooks` package and POSTed to the webhook, and arrive.
// A second subcar with auth.mode = "jwt" checks tokens passed by the
// client's connectionParams.
//
// Needs a built subcar binary: SUBCAR_BIN=/path/to/subcar node --test
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient } from 'graphql-ws';
import { Webhook } from 'standardwebhooks';
import WebSocket from 'ws';
import {
  COUNTER_SCHEMA,
  freePorts,
  jwt as signJwt,
  opsOnlyConfig,
  startHelloUpstream,
  startSubcar,
  subcarConfig,
  waitOk,
} from './harness.mjs';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const JWT_SECRET = 'js-group-jwt-secret-0123456789';

let subcar;
let authed;
let upstream;
let publicPort;
let webhookPort;
let authedPort;

/** An HS256 JWT for `claims`, expiring in ten minutes. */
function jwt(claims, secret = JWT_SECRET) {
  return signJwt(claims, secret);
}

before(async () => {
  const bin = process.env.SUBCAR_BIN;
  assert.ok(bin, 'set SUBCAR_BIN to the subcar binary');
  // The upstream: a real GraphQL server (graphql-js) for queries sent over
  // the socket.
  let upstreamUrl;
  ({ server: upstream, url: upstreamUrl } = await startHelloUpstream());
  const ports = await freePorts();
  publicPort = ports.public;
  webhookPort = ports.webhook;
  const dir = mkdtempSync(join(tmpdir(), 'subcar-js-'));
  writeFileSync(join(dir, 'schema.graphql'), COUNTER_SCHEMA);
  subcar = startSubcar(dir, 'subcar', subcarConfig({ ports, upstream: upstreamUrl, webhook: `secret = "${SECRET}"` }));
  const authedPorts = await freePorts();
  authedPort = authedPorts.public;
  const opsOnly = opsOnlyConfig({ ports: authedPorts, upstream: upstreamUrl, secret: JWT_SECRET });
  authed = startSubcar(dir, 'authed', opsOnly);
  await waitOk(publicPort);
  await waitOk(authedPort);
});

after(async () => {
  subcar?.kill('SIGTERM');
  authed?.kill('SIGTERM');
  upstream?.close();
});

function client() {
  return createClient({
    url: `ws://127.0.0.1:${publicPort}/graphql`,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: false,
  });
}

/** Subscribes and returns an async iterator of results. */
function subscribe(c, query) {
  return c.iterate({ query });
}

/** Runs a query over the socket; the session answers in order, so once
 * it returns, earlier subscriptions are registered. */
async function query(c, q) {
  for await (const r of c.iterate({ query: q })) return r;
}

async function post(events, { sign = true, tamper = false } = {}) {
  const body = JSON.stringify(events);
  const id = `msg_${Math.random().toString(36).slice(2)}`;
  const now = new Date();
  const headers = { 'content-type': 'application/json' };
  if (sign) {
    let signature = new Webhook(SECRET).sign(id, now, body);
    if (tamper) signature = new Webhook('whsec_c2VjcmV0MTIz').sign(id, now, body);
    headers['webhook-id'] = id;
    headers['webhook-timestamp'] = Math.floor(now.getTime() / 1000).toString();
    headers['webhook-signature'] = signature;
  }
  const res = await fetch(`http://127.0.0.1:${webhookPort}/webhook`, { method: 'POST', headers, body });
  return { status: res.status, body: await res.json() };
}

test('queries over the socket are answered with next + complete', async () => {
  const c = client();
  try {
    assert.deepEqual(await query(c, '{ hello }'), { data: { hello: 'world' } });
  } finally {
    await c.dispose();
  }
});

test('events signed with standardwebhooks reach graphql-ws subscribers in order', async () => {
  const c = client();
  try {
    const incidents = subscribe(c, 'subscription { incidentUpdated { id title severity } }');
    const counters = subscribe(c, 'subscription { counter }');
    const firstIncident = incidents.next();
    const firstCounter = counters.next();
    await query(c, '{ hello }');
    const accepted = await post([
      { topic: 'incident.updated', id: 'evt_1', payload: { id: '42', title: 'db down', severity: 'P1' } },
      { topic: 'counter', payload: 1 },
      { topic: 'counter', payload: 2 },
    ]);
    assert.equal(accepted.status, 202);
    assert.deepEqual(accepted.body, { accepted: 3, duplicates: 0 });
    assert.deepEqual((await firstIncident).value, {
      data: { incidentUpdated: { id: '42', title: 'db down', severity: 'P1' } },
    });
    assert.deepEqual((await firstCounter).value, { data: { counter: 1 } });
    assert.deepEqual((await counters.next()).value, { data: { counter: 2 } });
    // Completing from the client side ends the iterator cleanly.
    await counters.return();
    await incidents.return();
  } finally {
    await c.dispose();
  }
});

test('a bad signature is 401 and nothing is delivered', async () => {
  const c = client();
  try {
    const counters = subscribe(c, 'subscription { counter }');
    const first = counters.next();
    await query(c, '{ hello }');
    const refused = await post({ topic: 'counter', payload: 666 }, { tamper: true });
    assert.equal(refused.status, 401);
    assert.equal(refused.body.error.code, 'INVALID_SIGNATURE');
    const unsigned = await post({ topic: 'counter', payload: 667 }, { sign: false });
    assert.equal(unsigned.status, 401);
    assert.equal((await post({ topic: 'counter', payload: 7 })).status, 202);
    assert.deepEqual((await first).value, { data: { counter: 7 } });
    await counters.return();
  } finally {
    await c.dispose();
  }
});

test('validation errors reach the client as errors', async () => {
  const c = client();
  try {
    await assert.rejects(async () => {
      for await (const _ of c.iterate({ query: 'subscription { counter' })) {
        // never reached
      }
    });
  } finally {
    await c.dispose();
  }
});

/** A client of the jwt-mode subcar; resolves `closed` with the close event. */
function authedClient(connectionParams) {
  let closed;
  const closedEvent = new Promise((resolve) => (closed = resolve));
  const c = createClient({
    url: `ws://127.0.0.1:${authedPort}/graphql`,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: false,
    connectionParams,
    on: { closed: (e) => closed(e) },
  });
  return { c, closedEvent };
}

test('connectionParams with a valid token are acknowledged and claims reach allow', async () => {
  const { c } = authedClient({ Authorization: `Bearer ${jwt({ sub: 'u1', role: 'dev' })}` });
  try {
    assert.deepEqual(await query(c, '{ hello }'), { data: { hello: 'world' } });
    // allow = "claims.role == 'ops'": a dev is refused with FORBIDDEN.
    await assert.rejects(
      async () => {
        for await (const _ of c.iterate({ query: 'subscription { incidentUpdated { id } }' })) {
          // never reached
        }
      },
      (errors) => errors[0]?.extensions?.code === 'FORBIDDEN',
    );
    // The socket stayed open.
    assert.deepEqual(await query(c, '{ hello }'), { data: { hello: 'world' } });
  } finally {
    await c.dispose();
  }
});

test('connectionParams with a bad or missing token are closed 4403', async () => {
  for (const params of [{ Authorization: `Bearer ${jwt({ sub: 'u1' }, 'wrong-secret')}` }, {}]) {
    const { c, closedEvent } = authedClient(params);
    try {
      const event = await closedEvent;
      assert.equal(event.code, 4403);
      assert.match(event.reason, /^Forbidden: /);
    } finally {
      await c.dispose();
    }
  }
});
