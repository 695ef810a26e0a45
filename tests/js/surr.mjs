import * as Y from 'yjs'
const a = new Y.Doc(); a.clientID = 1
const t = a.getText('text')
t.insert(0, 'x😀y')
const base = Y.encodeStateAsUpdate(a)
const sv = Y.encodeStateVector(a)
t.delete(2, 1) // half of the emoji (UTF-16 index 1..2 is the pair)
const del = Y.encodeStateAsUpdate(a, sv)
console.log(JSON.stringify({text: t.toString(), codes: [...t.toString()].map(c=>c.codePointAt(0).toString(16)), base: Buffer.from(base).toString('hex'), del: Buffer.from(del).toString('hex')}))
// insert in the middle of the pair
const b = new Y.Doc(); b.clientID = 2
Y.applyUpdate(b, base)
b.getText('text').insert(2, 'Z')
const ins = Y.encodeStateAsUpdate(b, sv)
console.log(JSON.stringify({text2: b.getText('text').toString(), ins: Buffer.from(ins).toString('hex')}))
// re-apply the full state of a into a fresh doc
const c = new Y.Doc(); Y.applyUpdate(c, Y.encodeStateAsUpdate(a))
console.log(JSON.stringify({fresh: c.getText('text').toString()}))
