// A Node Yjs hub for the benchmarks (benchmarks/peers.py starts it; one process, 127.0.0.1 only):
//   node hub.mjs y-websocket-server PORT [PRELOAD_FILE ROOM]
//   node hub.mjs hocuspocus        PORT [PRELOAD_FILE ROOM]
// y-websocket-server: the reference server of Yjs (@y/websocket-server, `setupWSConnection`
//   on a `ws` server, exactly as its own bin/server.js wires it; in memory, gc on).
// hocuspocus: @hocuspocus/server's `Server` with its defaults (in memory, `flushDelay` 0:
//   broadcasts coalesced within one event-loop turn, which its docs recommend), quiet, and
//   its idle-connection check relaxed to an hour (receivers of a benchmark send nothing for
//   long stretches; a real provider would send pings).
// PRELOAD_FILE (a Yjs update) is applied to ROOM's document before `ready` (catch-up), and the
// state encoded once, so that the joiner's sync does not pay V8's first compile of the encoder.
// Speaks JSON lines like benchmarks/nodes.py: prints {"event":"ready"}; on stdin
// {"cmd":"stats"} -> {"event":"stats","cpu_s":...}; {"cmd":"quit"} -> exits.
import fs from 'node:fs'
import http from 'node:http'
import readline from 'node:readline'
import * as Y from 'yjs'

const [kind, portText, preload, room] = process.argv.slice(2)
const port = Number(portText)
const emit = (o) => process.stdout.write(JSON.stringify(o) + '\n')
const state = preload ? fs.readFileSync(preload) : null
const docName = (room || '/bench').replace(/^\//, '')
let close = async () => {}

if (kind === 'y-websocket-server') {
  const { WebSocketServer } = await import('ws')
  const { setupWSConnection, getYDoc } = await import('@y/websocket-server/utils')
  if (state) {
    Y.applyUpdate(getYDoc(docName), state)
    Y.encodeStateAsUpdate(getYDoc(docName)) // warm: a running server has encoded states before
  }
  const wss = new WebSocketServer({ noServer: true })
  wss.on('connection', setupWSConnection)
  const server = http.createServer((_req, res) => { res.writeHead(200); res.end('okay') })
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req))
  })
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve))
  close = async () => { for (const c of wss.clients) c.terminate(); server.close() }
} else if (kind === 'hocuspocus') {
  const { Server } = await import('@hocuspocus/server')
  const extensions = []
  if (state) {
    extensions.push({
      async onLoadDocument ({ documentName, document }) {
        if (documentName === docName) Y.applyUpdate(document, state)
      }
    })
  }
  const server = new Server({ port, address: '127.0.0.1', quiet: true, timeout: 3600000, stopOnSignals: false, extensions })
  await server.listen()
  close = async () => { await server.destroy() }
  if (state) { // load the document now and keep it loaded (a direct connection stays open),
    // so that the join measures the transfer, not the load
    const conn = await server.hocuspocus.openDirectConnection(docName)
    Y.encodeStateAsUpdate(conn.document) // warm: a running server has encoded states before
    close = async () => { await conn.disconnect(); await server.destroy() }
  }
} else {
  console.error(`unknown hub ${kind}`)
  process.exit(2)
}
emit({ event: 'ready', pid: process.pid, port, kind, node: process.version })
const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  let cmd
  try { cmd = JSON.parse(line) } catch { return }
  if (cmd.cmd === 'stats') {
    const u = process.cpuUsage()
    emit({ event: 'stats', pid: process.pid, frames: 0, bytes: 0, by_type: {}, cpu_s: (u.user + u.system) / 1e6 })
  } else if (cmd.cmd === 'quit') {
    await close()
    emit({ event: 'stopped' })
    process.exit(0)
  }
})
rl.on('close', async () => { await close(); process.exit(0) })
