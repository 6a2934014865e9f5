import t from 'tap'
import { randomBytes } from 'node:crypto'
import { fsyncSync, openSync, readFileSync, truncateSync, writeFileSync } from 'node:fs'
import { Writable } from 'node:stream'
import { ComposedImage } from '../../../services/compose/composed-image.ts'
import { ImageWriter } from '../../../services/compose/image-writer.ts'
import { FilePool, openFileCount } from '../../../services/compose/file-pool.ts'
import { loadMemoryMapper, type MemoryMapper } from '../../../services/compose/memory-map.ts'

// Where koffi has no binary (s390x) these tests skip; test/routes/mmap-fallback.test.ts covers that platform's path.
let unavailable: string | false = false
const mapper: MemoryMapper | undefined = await loadMemoryMapper().catch((err: Error) => { unavailable = `memory maps unavailable here: ${err.message}`; return undefined })
const writer = new ImageWriter()
const POSIX_FADV_DONTNEED = 4
const fadvise = mapper !== undefined
  ? (await import('koffi')).default.load('libc.so.6').func('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)') as (fd: number, offset: number, length: number, advice: number) => number
  : () => -1

const mapped = (path: string): number => readFileSync('/proc/self/maps', 'utf8').split('\n').filter(l => l.endsWith(` ${path}`)).length

function collector (): { sink: Writable, bytes: () => Buffer } {
  const chunks: Buffer[] = []
  // Copies each chunk: a slice of a mapping is only valid while the file is held.
  const sink = new Writable({ write (chunk: Buffer, _e, done) { chunks.push(Buffer.from(chunk)); setImmediate(done) } })
  return { sink, bytes: () => Buffer.concat(chunks) }
}

t.test('a mapped file outlives its closed pool until the last user releases it', { skip: unavailable }, async t => {
  const path = `${t.testdir()}/base.bin`
  writeFileSync(path, randomBytes(1 << 20))
  const files = openFileCount()
  const pool = new FilePool({ mapper })
  const file = await pool.retain(path)
  t.equal(mapped(path), 1, 'mapped once')
  t.equal((await pool.retain(path)).users, 2, 'a second user shares the mapping')
  file.release()
  let closed = false
  const closing = pool.close().then(() => { closed = true })
  await new Promise(resolve => setTimeout(resolve, 50))
  t.notOk(closed, 'close waits for the user')
  t.equal(mapped(path), 1, 'still mapped while used')
  t.equal(file.region!.bytes[0], readFileSync(path)[0], 'and readable')
  await t.rejects(pool.retain(path), /file pool closed/, 'a closed pool hands out nothing')
  file.release()
  await closing
  t.equal(mapped(path), 0, 'unmapped after the last release')
  t.equal(openFileCount(), files, 'and closed')
})

t.test('a newly mapped file is mapped into the process page by page ahead of the first response', { skip: unavailable }, async t => {
  const path = `${t.testdir()}/ahead.bin`
  writeFileSync(path, randomBytes(8 << 20))
  const pool = new FilePool({ mapper })
  t.teardown(() => pool.close())
  const file = await pool.retain(path)
  const mappedKiB = (): number => {
    const smaps = readFileSync('/proc/self/smaps', 'utf8')
    const at = smaps.indexOf(` ${path}\n`)
    return Number(/^Rss:\s+(\d+) kB/m.exec(smaps.slice(at))![1])
  }
  for (let i = 0; i < 100 && mappedKiB() < 8 << 10; i++) await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(mappedKiB(), 8 << 10, 'every page is in the process before any byte is sent')
  file.release()
})

t.test('pages dropped from the page cache are faulted in off the event loop, and the bytes are right', { skip: unavailable }, async t => {
  const path = `${t.testdir()}/cold.bin`
  const content = randomBytes(24 << 20)
  writeFileSync(path, content)
  const fd = openSync(path, 'r')
  // Without prefaulting: pages mapped into the process are not dropped by POSIX_FADV_DONTNEED.
  const pool = new FilePool({ mapper, prefault: false })
  t.teardown(() => pool.close())
  const image = await ComposedImage.fromSegments([{ kind: 'buffer', data: Buffer.from('head') }, { kind: 'file', path, offset: 4096, length: content.length - 4096 }], pool)
  const file = await pool.retain(path)
  fsyncSync(fd) // dirty pages are not dropped
  t.equal(fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0)
  t.notOk(file.region!.resident(4096, 1 << 20), 'cold after POSIX_FADV_DONTNEED')
  const { sink, bytes } = collector()
  await writer.writeTo(image, sink)
  t.ok(bytes().equals(Buffer.concat([Buffer.from('head'), content.subarray(4096)])), 'every byte as on disk')
  t.ok(file.region!.resident(4096, content.length - 4096), 'resident after the stream')
  file.release()
  t.equal(await pool.users(), 0, 'the stream released the file')
})

t.test('a sink destroyed mid-stream releases the mapped file once it has closed', { skip: unavailable }, async t => {
  const path = `${t.testdir()}/big.bin`
  writeFileSync(path, randomBytes(16 << 20))
  const pool = new FilePool({ mapper })
  const image = await ComposedImage.fromSegments([{ kind: 'file', path, offset: 0, length: 16 << 20 }], pool)
  const stalled = new Writable({ highWaterMark: 1 << 20, write (_chunk, _encoding, _callback) { /* never completes */ } })
  const writing = writer.writeTo(image, stalled)
  await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(await pool.users(), 1, 'held while the stream runs')
  stalled.destroy()
  await t.rejects(writing, /sink closed|destroyed/)
  t.equal(await pool.users(), 0, 'released')
  await pool.close()
  t.equal(mapped(path), 0, 'and unmapped when the pool closes')
})

t.test('many ranges written to one sink (a multipart answer) leave no listener behind on it', { skip: unavailable }, async t => {
  const path = `${t.testdir()}/parts.bin`
  writeFileSync(path, randomBytes(4 << 20))
  const pool = new FilePool({ mapper })
  t.teardown(() => pool.close())
  const image = await ComposedImage.fromSegments([{ kind: 'file', path, offset: 0, length: 4 << 20 }], pool)
  const { sink, bytes } = collector()
  const before = { close: sink.listenerCount('close'), drain: sink.listenerCount('drain') }
  for (let i = 0; i < 40; i++) await writer.writeTo(image, sink, i * 65536, i * 65536 + 1000)
  t.same({ close: sink.listenerCount('close'), drain: sink.listenerCount('drain') }, before)
  t.equal(bytes().length, 40_000)
})

t.test('a read that fails mid-stream rejects at once; the file is released when the caller destroys the sink', async t => {
  const path = `${t.testdir()}/short.bin`
  writeFileSync(path, randomBytes(4 << 20))
  const pool = new FilePool()
  t.teardown(() => pool.close())
  const image = await ComposedImage.fromSegments([{ kind: 'file', path, offset: 0, length: 4 << 20 }], pool)
  truncateSync(path, 1 << 20)
  // A sink slow to complete: writes are still pending when the read fails.
  const sink = new Writable({ highWaterMark: 8 << 20, write (_chunk, _e, done) { setTimeout(done, 200) } })
  await t.rejects(writer.writeTo(image, sink), /ended early/)
  t.notOk(sink.destroyed, 'the sink is the caller\'s to destroy (and its error to log)')
  t.equal(await pool.users(), 1, 'the file is held while the sink may still send its bytes')
  sink.destroy()
  await new Promise(resolve => sink.once('close', resolve))
  t.equal(await pool.users(), 0, 'and released once it has closed')
})
