import t from 'tap'
import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { PassThrough, Writable } from 'node:stream'
import { ComposedImage } from '../../../services/compose/composed-image.ts'
import { ImageWriter } from '../../../services/compose/image-writer.ts'
import { largeBuffersInUse, ReadBuffers } from '../../../services/compose/read-buffers.ts'
import type { Segment } from '../../../services/compose/segment.ts'

const writer = new ImageWriter()

function prng (seed: number): () => number {
  let s = seed >>> 0
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32 }
}

/** Random segments over a random file, plus the bytes they stand for. */
function randomImage (dir: string, random: () => number): { segments: Segment[], bytes: Buffer } {
  const file = randomBytes(3 << 20)
  writeFileSync(`${dir}/base.bin`, file)
  const segments: Segment[] = []
  const parts: Buffer[] = []
  const count = 1 + Math.floor(random() * 12)
  for (let i = 0; i < count; i++) {
    const kind = random()
    if (kind < 0.4) {
      const offset = Math.floor(random() * file.length)
      const length = Math.floor(random() * Math.min(file.length - offset, 2.5 * (1 << 20)))
      segments.push({ kind: 'file', path: `${dir}/base.bin`, offset, length })
      parts.push(file.subarray(offset, offset + length))
    } else if (kind < 0.7) {
      const data = randomBytes(Math.floor(random() * 5000))
      segments.push({ kind: 'buffer', data })
      parts.push(data)
    } else {
      const length = Math.floor(random() * (2 << 20))
      segments.push({ kind: 'zero', length })
      parts.push(Buffer.alloc(length))
    }
  }
  return { segments, bytes: Buffer.concat(parts) }
}

async function collect (image: ComposedImage, start: number, end: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  const sink = new Writable({ write (chunk: Buffer, _e, cb) { chunks.push(Buffer.from(chunk)); cb() } })
  await writer.writeTo(image, sink, start, end)
  return Buffer.concat(chunks)
}

t.test('range reads equal slices of the materialized bytes (property test)', async t => {
  const random = prng(42)
  for (let round = 0; round < 12; round++) {
    const dir = t.testdir()
    const { segments, bytes } = randomImage(dir, random)
    let image = await ComposedImage.fromSegments(segments)
    const expected = Buffer.from(bytes)
    // A couple of non-overlapping patches, like embed areas.
    if (expected.length > 100) {
      const first = Math.floor(random() * (expected.length / 2))
      const data = randomBytes(Math.min(40, expected.length / 2 - first))
      image = image.patch(first, data, data.length + 10 > expected.length / 2 - first ? data.length : data.length + 10)
      const zeroTo = first + Math.max(data.length, data.length + 10 > expected.length / 2 - first ? data.length : data.length + 10)
      data.copy(expected, first)
      expected.fill(0, first + data.length, zeroTo)
    }
    t.equal(image.size, expected.length)
    for (let i = 0; i < 6; i++) {
      const start = Math.floor(random() * (expected.length + 1))
      const end = start + Math.floor(random() * (expected.length - start + 1))
      t.ok((await writer.toBuffer(image, start, end)).equals(expected.subarray(start, end)), `read ${start}-${end}`)
      t.ok((await collect(image, start, end)).equals(expected.subarray(start, end)), `writeTo ${start}-${end}`)
    }
    t.ok((await writer.toBuffer(image)).equals(expected), 'whole image')
    await image.pool.close()
  }
})

t.test('patches: size kept, ETag changes, overlaps refused, append', async t => {
  const dir = t.testdir({ 'f.bin': Buffer.alloc(10000, 1) })
  const base = await ComposedImage.fromSegments([{ kind: 'file', path: `${dir}/f.bin`, offset: 0, length: 10000 }])
  t.teardown(() => base.pool.close())
  const again = await ComposedImage.fromSegments([{ kind: 'file', path: `${dir}/f.bin`, offset: 0, length: 10000 }])
  t.equal(base.etag, again.etag, 'same input, same ETag')
  const patched = base.patch(100, Buffer.from('abc'), 10)
  t.equal(patched.size, 10000)
  t.not(patched.etag, base.etag)
  t.not(base.patch(100, Buffer.from('abd'), 10).etag, patched.etag, 'any byte change changes the ETag')
  t.equal(base.patch(100, Buffer.from('abc'), 10).etag, patched.etag, 'same patch, same ETag')
  t.same([...(await writer.toBuffer(patched, 98, 112))], [1, 1, 97, 98, 99, 0, 0, 0, 0, 0, 0, 0, 1, 1])
  t.throws(() => patched.patch(105, Buffer.from('x')), { code: 'IMG_PATCH_OVERLAP' })
  t.throws(() => base.patch(9999, Buffer.from('xy')), RangeError)
  const appended = patched.append([Buffer.from('tail')])
  t.equal(appended.size, 10004)
  t.equal((await writer.toBuffer(appended, 10000, 10004)).toString(), 'tail')
  t.equal((await writer.toBuffer(appended, 100, 103)).toString(), 'abc', 'patches survive append')
  await again.pool.close()
})

t.test('a destroyed stream stops reading at once', async t => {
  const dir = t.testdir()
  writeFileSync(`${dir}/big.bin`, Buffer.alloc(64 << 20))
  const image = await ComposedImage.fromSegments([{ kind: 'file', path: `${dir}/big.bin`, offset: 0, length: 64 << 20 }])
  t.teardown(() => image.pool.close())
  let received = 0
  const sink = new PassThrough({ highWaterMark: 1 << 20 })
  sink.on('data', (chunk: Buffer) => {
    received += chunk.length
    if (received > 4 << 20) sink.destroy()
  })
  await t.rejects(writer.writeTo(image, sink), /sink closed/)
  t.ok(received < 24 << 20, `stopped after ${received} bytes`)

  const readable = writer.read(image)
  let got = 0
  await new Promise<void>(resolve => {
    readable.on('data', (chunk: Buffer) => { got += chunk.length; if (got >= 2 << 20) { readable.destroy(); resolve() } })
  })
  t.ok(got < 8 << 20, 'Readable stops too')
})

t.test('constant memory: a slow sink holds only a few chunks', async t => {
  const dir = t.testdir()
  writeFileSync(`${dir}/big.bin`, Buffer.alloc(96 << 20, 7))
  const image = await ComposedImage.fromSegments([{ kind: 'file', path: `${dir}/big.bin`, offset: 0, length: 96 << 20 }])
  t.teardown(() => image.pool.close())
  let pending = 0
  let peak = 0
  const sink = new Writable({
    highWaterMark: 1 << 20,
    write (chunk: Buffer, _e, cb) {
      pending += chunk.length
      peak = Math.max(peak, pending)
      setImmediate(() => { pending -= chunk.length; cb() })
    }
  })
  await writer.writeTo(image, sink)
  t.ok(peak <= 20 << 20, `at most ${(peak / 1048576).toFixed(0)} MiB in flight`)
})

t.test('writeTo on a sink that stalls and is then destroyed: it ends, and every shared buffer comes back', async t => {
  const dir = t.testdir()
  writeFileSync(`${dir}/big.bin`, randomBytes(32 << 20))
  const image = await ComposedImage.fromSegments([{ kind: 'file', path: `${dir}/big.bin`, offset: 0, length: 32 << 20 }])
  // A sink that accepts writes but never completes them: like a socket whose peer stopped reading.
  const stalled = new Writable({ highWaterMark: 1 << 20, write (_chunk, _encoding, _callback) { /* never calls back */ } })
  const writing = writer.writeTo(image, stalled)
  await new Promise(resolve => setTimeout(resolve, 100))
  t.ok(largeBuffersInUse() > 0, 'buffers are lent while the write is pending')
  stalled.destroy()
  await t.rejects(writing, /sink closed|destroyed|Cannot call write/, 'writeTo ends instead of waiting forever')
  await new Promise(resolve => setImmediate(resolve))
  t.equal(largeBuffersInUse(), 0, 'the budget is whole again')
})

t.test('the read-buffer pool: what it lends comes back and is reused, within its budget', async t => {
  const pool = new ReadBuffers(8 << 20)
  const a = pool.take(4 << 20)
  const b = pool.take(4 << 20)
  t.equal(pool.largeInUse, 8 << 20)
  t.equal(pool.take(4 << 20).length, 128 << 10, 'over the budget a reader gets the smallest buffer')
  pool.give(a)
  pool.give(b)
  t.equal(pool.largeInUse, 0)
  const again = pool.take(1 << 20)
  t.ok(again === a || again === b, 'a larger idle buffer serves a large read: nothing is allocated')
  const small = pool.take(64 << 10)
  t.ok(small === a || small === b, 'a small read too: idle buffers are used before anything is allocated')
  pool.give(again)
  pool.give(small)
  const big = pool.take(8 << 20)
  t.equal(big.length, 8 << 20, 'a new size is allocated once idle buffers make room for it')
  t.equal(pool.largeInUse, 8 << 20)
  pool.give(big)
  t.equal(pool.take(8 << 20), big, 'and kept afterwards')
})

t.test('zero segments stream from one shared chunk, however long', async t => {
  const image = await ComposedImage.fromSegments([{ kind: 'buffer', data: Buffer.from('x') }, { kind: 'zero', length: 9 << 20 }])
  const chunks: Buffer[] = []
  const sink = new Writable({ write (chunk: Buffer, _encoding, done) { chunks.push(chunk); done() } })
  await writer.writeTo(image, sink)
  const zeros = chunks.slice(1)
  t.equal(zeros.reduce((n, c) => n + c.length, 0), 9 << 20)
  t.ok(zeros.every(c => c.buffer === zeros[0]!.buffer && c.every(byte => byte === 0)), `${zeros.length} chunks, one underlying buffer of zeros`)
})
