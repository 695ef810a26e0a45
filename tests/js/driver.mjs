// A stock y-websocket client, driven by crdtsync's tests (tests/test_yjs_door.py).
//
// Reads one JSON command per line on stdin, answers one JSON line per command on stdout:
//   {"op":"open","id":"a","url":"ws://127.0.0.1:P/yjs","room":"s","params":{"token":"..."}}
//       -> {"ok":true} once the provider is synced
//   {"op":"random","ids":["a","b","c"],"n":200,"seed":1}  random Text/Array/Map edits
//   {"op":"edit","id":"a","text":"...","key":"k"}          insert text, set map key
//   {"op":"text","id":"a","insert":[i,"s"]} / "delete":[i,n] / "format":[i,n,attrs]
//       -> {"text": the JS text}
//   {"op":"set","id":"a","key":"k","value":V}              root map: V as JS value (see decode)
//   {"op":"dump","id":"a"}      -> {"text":..., "arr":[...], "map":{...}, "root":{...}}
//   {"op":"converge","ids":[...],"timeout":20}  -> once every doc has the same state
//   {"op":"stats","id":"a"}     -> {"connects":n, "closes":n, "status":"connected"}
//   {"op":"awareness","id":"a"} -> {"states": number of awareness states the client sees}
//   {"op":"raw","url":"...","hex":"..."} -> send one raw frame, answer the close code
//   {"op":"big","id":"a","n":..} -> {"bytes": size of the doc's update}
// Values cross as JSON: {"$bytes":"hex"} is a Uint8Array, {"$bigint":"123"} a BigInt.
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
import readline from 'node:readline'

const docs = new Map()

function reply (obj) { process.stdout.write(JSON.stringify(obj) + '\n') }

function encode (v) {
  if (v instanceof Uint8Array) return { $bytes: Buffer.from(v).toString('hex') }
  if (typeof v === 'bigint') return { $bigint: v.toString() }
  if (v instanceof Y.AbstractType) return encode(v.toJSON())
  if (Array.isArray(v)) return v.map(encode)
  if (v !== null && typeof v === 'object') {
    const out = {} // sorted keys: a Y.Map's iteration order differs between replicas
    for (const k of Object.keys(v).sort()) out[k] = encode(v[k])
    return out
  }
  if (typeof v === 'number' && Object.is(v, -0)) return { $number: '-0' }
  return v
}

function decode (v) {
  if (Array.isArray(v)) return v.map(decode)
  if (v !== null && typeof v === 'object') {
    if ('$bytes' in v) return new Uint8Array(Buffer.from(v.$bytes, 'hex'))
    if ('$bigint' in v) return BigInt(v.$bigint)
    if ('$number' in v) return Number(v.$number)
    const out = {}
    for (const [k, x] of Object.entries(v)) out[k] = decode(x)
    return out
  }
  return v
}

function rootJSON (doc) {
  const out = {}
  for (const k of [...doc.getMap('root').keys()].sort()) out[k] = encode(doc.getMap('root').get(k))
  return out
}

function dump (doc) {
  return {
    text: doc.getText('text').toString(),
    arr: encode(doc.getArray('arr').toArray()),
    map: encode(doc.getMap('map').toJSON()),
    root: rootJSON(doc)
  }
}

function rng (seed) { // mulberry32
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function open (cmd) {
  const doc = new Y.Doc()
  const stats = { connects: 0, closes: 0, status: 'new' }
  const provider = new WebsocketProvider(cmd.url, cmd.room, doc, {
    WebSocketPolyfill: WebSocket, params: cmd.params || {}, disableBc: true
  })
  provider.on('status', (e) => {
    stats.status = e.status
    if (e.status === 'connected') stats.connects++
  })
  provider.on('connection-close', () => { stats.closes++ })
  docs.set(cmd.id, { doc, provider, stats })
  const deadline = Date.now() + (cmd.timeout || 20) * 1000
  while (!provider.synced) {
    if (Date.now() > deadline) return { ok: false, error: 'not synced', stats }
    await sleep(10)
  }
  return { ok: true }
}

async function random (cmd) {
  const r = rng(cmd.seed || 1)
  const ids = cmd.ids
  for (let i = 0; i < cmd.n; i++) {
    const { doc } = docs.get(ids[Math.floor(r() * ids.length)])
    const kind = Math.floor(r() * 3)
    if (kind === 0) {
      const t = doc.getText('text')
      if (t.length > 0 && r() < 0.3) {
        const at = Math.floor(r() * t.length)
        t.delete(at, Math.min(3, t.length - at))
      } else {
        t.insert(Math.floor(r() * (t.length + 1)), 'abcdefgh'.slice(0, 1 + Math.floor(r() * 8)))
      }
    } else if (kind === 1) {
      const a = doc.getArray('arr')
      if (a.length > 0 && r() < 0.3) a.delete(Math.floor(r() * a.length), 1)
      else a.insert(Math.floor(r() * (a.length + 1)), [Math.floor(r() * 1000)])
    } else {
      const m = doc.getMap('map')
      const key = 'k' + Math.floor(r() * 20)
      if (r() < 0.2) m.delete(key)
      else m.set(key, r() < 0.5 ? Math.floor(r() * 1e6) : 'v' + i)
    }
    if (i % 10 === 0) await sleep(1)
  }
  return { ok: true }
}

async function converge (cmd) {
  const deadline = Date.now() + (cmd.timeout || 20) * 1000
  for (;;) {
    const states = cmd.ids.map((id) => JSON.stringify(dump(docs.get(id).doc)))
    if (states.every((s) => s === states[0])) return { ok: true, state: JSON.parse(states[0]) }
    if (Date.now() > deadline) return { ok: false, states }
    await sleep(20)
  }
}

async function raw (cmd) {
  return await new Promise((resolve) => {
    const ws = new WebSocket(cmd.url)
    ws.on('open', () => ws.send(Buffer.from(cmd.hex, 'hex')))
    ws.on('message', () => {})
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
    ws.on('error', (e) => resolve({ error: String(e) }))
  })
}

async function handle (cmd) {
  switch (cmd.op) {
    case 'open': return await open(cmd)
    case 'random': return await random(cmd)
    case 'converge': return await converge(cmd)
    case 'raw': return await raw(cmd)
    case 'edit': {
      const { doc } = docs.get(cmd.id)
      doc.transact(() => {
        const t = doc.getText('text')
        t.insert(t.length, cmd.text)
        doc.getMap('map').set(cmd.key, cmd.text)
      })
      return { ok: true }
    }
    case 'text': { // {"insert":[index, "str"]}, {"delete":[index, n]} or
      // {"format":[index, n, attributes]}, UTF-16 indices
      const t = docs.get(cmd.id).doc.getText('text')
      if (cmd.insert) t.insert(cmd.insert[0], cmd.insert[1])
      if (cmd.delete) t.delete(cmd.delete[0], cmd.delete[1])
      if (cmd.format) t.format(cmd.format[0], cmd.format[1], cmd.format[2])
      return { text: t.toString() }
    }
    case 'rich': { // formatted text, an embed, an XML fragment and a subdocument in 'root'
      const { doc } = docs.get(cmd.id)
      doc.transact(() => {
        const t = new Y.Text()
        doc.getMap('root').set('rich', t)
        t.insert(0, 'plain ')
        t.insert(6, 'bold', { bold: true })
        t.insertEmbed(10, { image: 'cat.png' })
        t.format(0, 5, { italic: true })
        const frag = new Y.XmlFragment()
        doc.getMap('root').set('xml', frag)
        const p = new Y.XmlElement('p')
        p.setAttribute('class', 'lead')
        const xt = new Y.XmlText()
        xt.insert(0, 'hello', { bold: true })
        p.insert(0, [xt])
        frag.insert(0, [p])
        const sub = new Y.Doc({ guid: 'sub-1' })
        doc.getMap('root').set('subdoc', sub)
        sub.getText('t').insert(0, 'inside')
      })
      return { ok: true }
    }
    case 'richdump': {
      const root = docs.get(cmd.id).doc.getMap('root')
      const rich = root.get('rich')
      const xml = root.get('xml')
      const sub = root.get('subdoc')
      return {
        delta: rich ? rich.toDelta() : null,
        xml: xml ? xml.toString() : null,
        subdoc: sub ? { guid: sub.guid, isDoc: sub instanceof Y.Doc } : null
      }
    }
    case 'set': {
      const { doc } = docs.get(cmd.id)
      doc.getMap('root').set(cmd.key, decode(cmd.value))
      return { ok: true }
    }
    case 'big': {
      const { doc } = docs.get(cmd.id)
      return { bytes: Y.encodeStateAsUpdate(doc).length, keys: doc.getMap('root').size }
    }
    case 'dump': return dump(docs.get(cmd.id).doc)
    case 'stats': return docs.get(cmd.id).stats
    case 'awareness': {
      const { provider } = docs.get(cmd.id)
      return { states: provider.awareness.getStates().size }
    }
    case 'close': {
      for (const { provider } of docs.values()) provider.destroy()
      return { ok: true }
    }
    default: return { error: 'unknown op ' + cmd.op }
  }
}

const rl = readline.createInterface({ input: process.stdin })
let chain = Promise.resolve()
rl.on('line', (line) => {
  chain = chain.then(async () => {
    try { reply(await handle(JSON.parse(line))) } catch (e) { reply({ error: String(e && e.stack || e) }) }
  })
})
rl.on('close', () => { chain.then(() => process.exit(0)) })
