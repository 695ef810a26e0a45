// Node Hocuspocus clients for benchmarks/yjs.py, the natural pairing of a Hocuspocus hub:
//   node client.mjs fanout URL ROOM CLIENTS UPDATES
//   node client.mjs sync   URL ROOM ENTRIES
// The workload is benchmarks/yjs_workload.mjs, shared with the y-websocket client
// (tests/js/bench.mjs); this file only supplies @hocuspocus/provider's HocuspocusProvider (one
// websocket each).
import * as Y from 'yjs'
import { HocuspocusProvider } from '@hocuspocus/provider'
import WebSocket from 'ws'
import { main } from '../yjs_workload.mjs'

const [, url, room] = process.argv.slice(2)

await main(Y, {
  open: (doc) => new HocuspocusProvider({ url, name: room, document: doc, WebSocketPolyfill: WebSocket }),
  synced: (p) => p.isSynced,
  socket: (p) => p.configuration.websocketProvider.webSocket
}, process.argv.slice(2))
