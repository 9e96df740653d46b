// A Yjs peer for the editor interop tests (tests/test_editor_yjs.py).
// Reads one JSON command per line on stdin and writes one JSON result per line on stdout.
// Updates and state vectors travel base64-encoded; indices are Unicode code points (the
// relay's unit) and are converted here to the UTF-16 indices Y.Text uses.
import { createInterface } from 'node:readline'
import * as Y from 'yjs'

const docs = new Map()
const REMOTE = 'remote'

const b64 = (bytes) => Buffer.from(bytes).toString('base64')
const unb64 = (text) => new Uint8Array(Buffer.from(text, 'base64'))

/** The UTF-16 index of code point `cp` in `s`. */
const utf16 = (s, cp) => [...s].slice(0, cp).join('').length

function peer (id) {
  const p = docs.get(id)
  if (!p) throw new Error(`no peer ${id}`)
  return p
}

function text (p, file) {
  const t = p.files.get(file)
  if (!(t instanceof Y.Text)) throw new Error(`no text file ${file}`)
  return t
}

const ops = {
  new ({ id, client }) {
    const doc = new Y.Doc()
    if (client !== undefined) doc.clientID = client
    const p = { doc, files: doc.getMap('files'), outbox: [] }
    doc.on('update', (update, origin) => {
      if (origin !== REMOTE) p.outbox.push(b64(update))
    })
    docs.set(id, p)
    return {}
  },
  create ({ id, file, content }) {
    const p = peer(id)
    p.doc.transact(() => p.files.set(file, new Y.Text(content || '')))
    return {}
  },
  remove ({ id, file }) {
    const p = peer(id)
    p.doc.transact(() => p.files.delete(file))
    return {}
  },
  rename ({ id, file, to }) {
    const p = peer(id)
    p.doc.transact(() => {
      const content = text(p, file).toString()
      p.files.delete(file)
      p.files.set(to, new Y.Text(content))
    })
    return {}
  },
  insert ({ id, file, index, chunk }) {
    const t = text(peer(id), file)
    t.insert(utf16(t.toString(), index), chunk)
    return {}
  },
  type ({ id, file, index, chunk }) {
    // one transaction (one update) per character, as a person types
    const t = text(peer(id), file)
    let at = utf16(t.toString(), index)
    for (const ch of chunk) {
      t.insert(at, ch)
      at += ch.length
    }
    return {}
  },
  delete ({ id, file, index, length }) {
    const t = text(peer(id), file)
    const s = t.toString()
    const start = utf16(s, index)
    t.delete(start, utf16(s, index + length) - start)
    return {}
  },
  format ({ id, file, index, length, attrs }) {
    const t = text(peer(id), file)
    const s = t.toString()
    const start = utf16(s, index)
    t.format(start, utf16(s, index + length) - start, attrs)
    return {}
  },
  updates ({ id }) {
    const p = peer(id)
    const out = p.outbox
    p.outbox = []
    return { updates: out }
  },
  apply ({ id, update }) {
    Y.applyUpdate(peer(id).doc, unb64(update), REMOTE)
    return {}
  },
  files ({ id }) {
    const out = {}
    for (const [name, value] of peer(id).files.entries()) {
      out[name] = value instanceof Y.Text ? value.toString() : { notText: String(value) }
    }
    return { files: out }
  },
  sv ({ id }) {
    return { sv: b64(Y.encodeStateVector(peer(id).doc)) }
  },
  diff ({ id, sv }) {
    return { update: b64(Y.encodeStateAsUpdate(peer(id).doc, sv ? unb64(sv) : undefined)) }
  },
  pending ({ id }) {
    const store = peer(id).doc.store
    return { pending: store.pendingStructs !== null || store.pendingDs !== null }
  }
}

const rl = createInterface({ input: process.stdin })
rl.on('line', (line) => {
  let result
  try {
    const cmd = JSON.parse(line)
    const op = ops[cmd.op]
    if (!op) throw new Error(`unknown op ${cmd.op}`)
    result = { ok: true, ...op(cmd) }
  } catch (err) {
    result = { ok: false, error: String(err && err.stack ? err.stack : err) }
  }
  process.stdout.write(JSON.stringify(result) + '\n')
})
