// The JS group's harness, as tests/support is the Rust tests': free ports,
// a subcar configuration, the subcar binary (SUBCAR_BIN) started on it and
// waited for. Not a test file: node --test runs only `*.test.mjs` here.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { buildSchema, graphql } from 'graphql';

/** The subscription schema the browser and recipe tests subscribe to. */
export const INCIDENT_SCHEMA = `
type Query { hello: String }
type Incident { id: ID! title: String severity: String }
type Subscription { incidentUpdated(severity: String): Incident }
`;

/** The schema of the socket clients' tests: incidents and a counter. */
export const COUNTER_SCHEMA = `
type Query { hello: String }
type Incident { id: ID! title: String severity: String }
type Subscription {
  incidentUpdated(severity: String): Incident
  counter: Int
}
`;

/** An HS256 JWT for `claims` signed with `secret`, expiring in ten minutes. */
export function jwt(claims, secret) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

/**
 * A real GraphQL server (graphql-js) answering `{ hello }` with "world",
 * for the queries sent over a socket; resolves with the server and its URL.
 */
export async function startHelloUpstream() {
  const schema = buildSchema('type Query { hello: String }');
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', async () => {
      const { query, variables, operationName } = JSON.parse(body);
      const result = await graphql({
        schema,
        source: query,
        variableValues: variables,
        operationName,
        rootValue: { hello: () => 'world' },
      });
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify(result));
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${server.address().port}/graphql` };
}

export async function freePort() {
  const server = createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Free ports for a subcar's three listeners. */
export async function freePorts() {
  return { public: await freePort(), admin: await freePort(), webhook: await freePort() };
}

/**
 * A subcar.toml on `ports` sending queries to `upstream`, serving
 * `schema.graphql` beside it with `incidentUpdated` on the topic
 * `incident.updated`; `server`, `subscription` and `webhook` add lines to
 * those sections, `extra` further sections.
 */
export function subcarConfig({ ports, upstream, server = '', subscription = '', webhook = '', extra = '' }) {
  return `
[server]
listen = "127.0.0.1:${ports.public}"
${server}
[admin]
listen = "127.0.0.1:${ports.admin}"
[upstream]
url = "${upstream}"
[schema]
path = "schema.graphql"
introspect_upstream = false
[[subscriptions]]
field = "incidentUpdated"
topic = "incident.updated"
${subscription}
[webhook]
listen = "127.0.0.1:${ports.webhook}"
${webhook}
${extra}
`;
}

/**
 * The configuration of a subcar with auth.mode = "jwt" (HS256 `secret`)
 * where only claims with role "ops" may subscribe to `incidentUpdated`.
 */
export function opsOnlyConfig({ ports, upstream, secret }) {
  return subcarConfig({
    ports,
    upstream,
    subscription: `allow = "claims.role == 'ops'"`,
    extra: `[auth]\nmode = "jwt"\n[auth.jwt]\nsecret = "${secret}"`,
  });
}

/** Writes `config` to `dir/name.toml` and runs subcar on it. */
export function startSubcar(dir, name, config) {
  const path = join(dir, `${name}.toml`);
  writeFileSync(path, config);
  return spawn(process.env.SUBCAR_BIN, ['run', '--config', path], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  });
}

/** Polls `path` on `port` until it answers 2xx, `tries` times 50 ms apart. */
export async function waitOk(port, { path = '/healthz', tries = 200, what = 'subcar started' } = {}) {
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}${path}`)).ok) return;
    } catch {
      // not listening yet
    }
    assert.ok(i < tries, what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A subcar replica whose process can be stopped (SIGTERM) and awaited. */
export async function replica(dir, name, config, ports, children) {
  const child = startSubcar(dir, name, config);
  children.add(child);
  const exited = new Promise((resolve) => child.once('exit', resolve));
  await waitOk(ports.admin, { path: '/readyz', tries: 400, what: `subcar on ${ports.admin} became ready` });
  return {
    async stop() {
      child.kill('SIGTERM');
      await exited;
      children.delete(child);
    },
  };
}

/** POSTs one `incident.updated` event to a webhook port; expects 202. */
export async function publishIncident(webhookPort, id, severity = 'P1') {
  const res = await fetch(`http://127.0.0.1:${webhookPort}/webhook`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ topic: 'incident.updated', id, payload: { id, title: `incident ${id}`, severity } }),
  });
  assert.equal(res.status, 202, `event ${id} accepted`);
}

/** Waits until `check()` is true, 25 ms apart, 10 s at most. */
export async function until(what, check) {
  for (let i = 0; !(await check()); i++) {
    assert.ok(i < 400, what);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** How many subscriptions `/status` on `adminPort` counts. */
export async function subscriptionCount(adminPort) {
  const status = await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json();
  return status.subscriptions?.total ?? status.subscriptions;
}
