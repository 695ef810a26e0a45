// The Yjs client workloads of benchmarks/yjs.py, shared by its two Node clients:
//   tests/js/bench.mjs           y-websocket's WebsocketProvider (npm packages in tests/js)
//   benchmarks/peers/client.mjs  @hocuspocus/provider's HocuspocusProvider (benchmarks/peers)
// Both run:  node CLIENT fanout URL ROOM CLIENTS UPDATES
//            node CLIENT sync   URL ROOM ENTRIES
// fanout: CLIENTS providers in one process on ROOM; client 0 writes UPDATES map sets as fast as
// its socket takes them; every other client records each update's latency (one clock: one
// process). A hub may merge several updates into one message (Hocuspocus does, and the
// crdtsync door does for a client it is behind on): a receiver then learns of every update up
// to the one it now holds at once, and each of them is counted with its own latency.
// client_cpu_s: this (clients') process's CPU seconds from the first write to the last
// arrival. sync: one provider joins ROOM and waits until its map 'm' holds ENTRIES keys.
// Prints one JSON line.
//
// This module imports no npm package: a client passes its own Yjs module and a provider
// adapter, so that each npm folder's node_modules (and its single Yjs instance) serves it:
//   { open (doc) -> provider, synced (p) -> bool, socket (p) -> WebSocket or null,
//   }
// The provider must emit 'status' events ({ status: 'connected' }) for connected_ms.

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function until (cond, timeoutMs) {
  const end = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > end) return false
    await sleep(2)
  }
  return true
}

async function sync (Y, adapter, entries) {
  const doc = new Y.Doc()
  const t0 = performance.now()
  const p = adapter.open(doc)
  let connected = null
  let firstUpdate = null
  p.on('status', (e) => { if (e.status === 'connected' && connected === null) connected = performance.now() - t0 })
  doc.on('update', () => { if (firstUpdate === null) firstUpdate = performance.now() - t0 })
  const ok = await until(() => adapter.synced(p) && doc.getMap('m').size >= entries, 300000)
  console.log(JSON.stringify({
    ok, seconds: (performance.now() - t0) / 1000, size: doc.getMap('m').size,
    connected_ms: connected, applied_ms: firstUpdate
  }))
  p.destroy()
}

async function fanout (Y, adapter, n, updates) {
  const docs = []
  const providers = []
  for (let i = 0; i < n; i++) {
    const doc = new Y.Doc()
    docs.push(doc)
    providers.push(adapter.open(doc))
  }
  await until(() => providers.every((p) => adapter.synced(p)), 30000)
  const latencies = []
  const got = new Array(n).fill(0) // update messages applied, per receiver
  const seen = new Array(n).fill(-1) // the last update index each receiver holds
  const sent = new Float64Array(updates) // when client 0 wrote each update
  for (let i = 1; i < n; i++) {
    const m = docs[i].getMap('m')
    docs[i].on('update', () => {
      got[i]++
      const v = m.get('t')
      if (!v) return
      const now = performance.now()
      for (let k = seen[i] + 1; k <= v[0]; k++) latencies.push(now - sent[k])
      if (v[0] > seen[i]) seen[i] = v[0]
    })
  }
  const m = docs[0].getMap('m')
  const ws0 = () => adapter.socket(providers[0])
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < updates; i++) {
    sent[i] = performance.now()
    m.set('t', [i, sent[i]])
    if (i % 20 === 0) {
      while (ws0() && ws0().bufferedAmount > 1 << 20) await sleep(1)
      await new Promise((resolve) => setImmediate(resolve))
    }
  }
  const done = () => seen.slice(1).every((k) => k === updates - 1)
  const ok = await until(done, 120000)
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  latencies.sort((x, y) => x - y)
  const q = (p) => latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null
  console.log(JSON.stringify({
    ok, seconds, updates, clients: n, updates_per_s: updates / seconds,
    p50_ms: q(0.5), p99_ms: q(0.99), max_ms: latencies.length ? latencies[latencies.length - 1] : null,
    received: got.slice(1), client_cpu_s: (cpu.user + cpu.system) / 1e6
  }))
  for (const p of providers) p.destroy()
}

// Run the workload the command line names (argv: process.argv.slice(2)), then exit.
export async function main (Y, adapter, argv) {
  const [mode, , , a, b] = argv
  if (mode === 'sync') await sync(Y, adapter, Number(a))
  else if (mode === 'fanout') await fanout(Y, adapter, Number(a), Number(b))
  else throw new Error(`unknown mode ${mode}: fanout or sync`)
  process.exit(0)
}
