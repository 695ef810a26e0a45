// Yjs-door benchmark client (benchmarks/yjs.py) with y-websocket providers:
//   node bench.mjs fanout URL ROOM CLIENTS UPDATES
//   node bench.mjs sync   URL ROOM ENTRIES
// The workload is benchmarks/yjs_workload.mjs, shared with the Hocuspocus client
// (benchmarks/peers/client.mjs); this file only supplies the provider.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import { main } from '../../benchmarks/yjs_workload.mjs'

const [, url, room] = process.argv.slice(2)

await main(Y, {
  open: (doc) => new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true }),
  synced: (p) => p.synced,
  socket: (p) => p.ws
}, process.argv.slice(2))
