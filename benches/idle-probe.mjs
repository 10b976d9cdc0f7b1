// Usage: node benches/idle-probe.mjs <subcar pid> <public port> <sockets> (after npm ci in tests/js).
// Idle memory per WebSocket connection of a running subcar: opens N
// graphql-transport-ws sockets, each acked with one subscription, and
// reports the process's RSS growth per connection.
import { readFileSync } from 'node:fs';
import WebSocket from '../tests/js/node_modules/ws/index.js';

const [pid, port, n] = process.argv.slice(2).map(Number);
const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
function open() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/graphql`, 'graphql-transport-ws');
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
    ws.on('message', (m) => {
      const msg = JSON.parse(m);
      if (msg.type === 'connection_ack') {
        ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { counter }' } }));
        setTimeout(() => resolve(ws), 1);
      }
    });
    ws.on('error', reject);
  });
}
const warm = [];
for (let i = 0; i < 20; i++) warm.push(await open());
warm.forEach((w) => w.close());
await new Promise((r) => setTimeout(r, 500));
const before = rss();
const all = [];
for (let i = 0; i < n; i += 50) all.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, open))));
await new Promise((r) => setTimeout(r, 1000));
const after = rss();
console.log(JSON.stringify({ n, before_kib: before, after_kib: after, per_conn_kib: ((after - before) / n).toFixed(2) }));
all.forEach((w) => w.terminate());
process.exit(0);
