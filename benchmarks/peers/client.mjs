// Node Hocuspocus clients for benchmarks/yjs.py, the natural pairing of a Hocuspocus hub:
//   node client.mjs fanout URL ROOM CLIENTS UPDATES
//   node client.mjs sync   URL ROOM ENTRIES
// The same workload and output as tests/js/bench.mjs (y-websocket clients), with
// @hocuspocus/provider's HocuspocusProvider (one websocket each) instead of WebsocketProvider.
// fanout: client 0 writes UPDATES map sets as fast as its socket takes them; every other client
// records each update's latency (one clock: one process). sync: one provider joins ROOM and waits
// until its map 'm' holds ENTRIES keys. Prints one JSON line.
import * as Y from 'yjs'
import { HocuspocusProvider } from '@hocuspocus/provider'
import WebSocket from 'ws'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const [mode, url, room, a, b] = process.argv.slice(2)

function provider (doc) {
  return new HocuspocusProvider({ url, name: room, document: doc, WebSocketPolyfill: WebSocket })
}

async function until (cond, timeoutMs) {
  const end = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > end) return false
    await sleep(2)
  }
  return true
}

const socket = (p) => p.configuration.websocketProvider.webSocket

if (mode === 'sync') {
  const entries = Number(a)
  const doc = new Y.Doc()
  const t0 = performance.now()
  const p = provider(doc)
  const ok = await until(() => p.isSynced && doc.getMap('m').size >= entries, 300000)
  console.log(JSON.stringify({ ok, seconds: (performance.now() - t0) / 1000, size: doc.getMap('m').size }))
  p.destroy()
  process.exit(0)
} else {
  const n = Number(a)
  const updates = Number(b)
  const docs = []
  const providers = []
  for (let i = 0; i < n; i++) {
    const doc = new Y.Doc()
    docs.push(doc)
    providers.push(provider(doc))
  }
  await until(() => providers.every((p) => p.isSynced), 30000)
  const latencies = []
  const got = new Array(n).fill(0)
  for (let i = 1; i < n; i++) {
    const m = docs[i].getMap('m')
    docs[i].on('update', () => {
      got[i]++
      const v = m.get('t')
      if (v) latencies.push(performance.now() - v[1])
    })
  }
  const m = docs[0].getMap('m')
  const t0 = performance.now()
  for (let i = 0; i < updates; i++) {
    m.set('t', [i, performance.now()])
    if (i % 20 === 0) {
      while (socket(providers[0]) && socket(providers[0]).bufferedAmount > 1 << 20) await sleep(1)
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
  // Hocuspocus coalesces broadcasts, so a receiver gets fewer updates than were written: done
  // when every receiver holds the last value.
  const ok = await until(() => docs.slice(1).every((d) => (d.getMap('m').get('t') || [-1])[0] === updates - 1), 120000)
  const seconds = (performance.now() - t0) / 1000
  latencies.sort((x, y) => x - y)
  const q = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null
  console.log(JSON.stringify({
    ok, seconds, updates, clients: n, updates_per_s: updates / seconds,
    p50_ms: q(0.5), p99_ms: q(0.99), max_ms: latencies.length ? latencies[latencies.length - 1] : null,
    received: got.slice(1)
  }))
  for (const p of providers) p.destroy()
  process.exit(0)
}
