// A stock Yjs client on a crdtsync shard: run by yjs_board.py (see examples/README.md).
//
//   node yjs_board.mjs ws://127.0.0.1:PORT/yjs board
//
// Needs the npm packages yjs, y-websocket and ws next to this file (`npm install yjs
// y-websocket ws`). Reads what the Python agent wrote, writes a value back, and exits once
// the agent has acknowledged it (so the write surely left).
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

const [url, room] = process.argv.slice(2)
const doc = new Y.Doc()
const provider = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
const root = doc.getMap('root') // the shard's dict-like API lives in the root map "root"

const until = async (cond, what) => {
  const end = Date.now() + 30000
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

await until(() => provider.synced && root.has('tasks'), 'the initial sync')
const count = root.get('count')
console.log(`js read: tasks=${JSON.stringify(root.get('tasks').toJSON())} count=${count} (${typeof count})`)
root.get('tasks').set('t2', 'review the docs') // a Y.Map: a CRDT edit, merged with the agent's
root.set('from_js', 'hello from JavaScript')
await until(() => root.get('ack') === true, "the agent's acknowledgement")
console.log('js saw the ack')
provider.destroy()
process.exit(0)
