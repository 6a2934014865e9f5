import t from 'tap'
import { createHash } from 'node:crypto'
import { copyFileSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync } from 'node:fs'
import { request, type IncomingMessage } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { largeBuffersInUse } from '../../services/compose/read-buffers.ts'
import { openFileCount } from '../../services/compose/file-pool.ts'
import { loadMemoryMapper } from '../../services/compose/memory-map.ts'
import { buildSyntheticIso } from '../../services/coreos/synthetic-iso.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'

// Every HTTP behaviour of image responses, over real sockets, once with memory-mapped files and once with reads.
const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')
const ISO = `/byid/${ID}/${X86_VERSION}/x86_64/full.iso`
const MINIMAL = `/byid/${ID}/${X86_VERSION}/x86_64/minimal.iso`
const KERNEL = `/boot-artifacts/kernel?arch=x86_64&version=${X86_VERSION}`
const isos = await routeIsos(t.testdir())
// Where koffi has no binary (s390x) the mapped variant skips; test/routes/mmap-fallback.test.ts covers that path.
const unavailable = await loadMemoryMapper().then(() => false as const, (err: Error) => `memory maps unavailable here: ${err.message}`)
const PATHS = [
  { mmap: 'true', name: 'memory-mapped files', skip: unavailable },
  { mmap: 'false', name: 'files read into buffers', skip: false as const }
]

/** Mappings of `path` in this process: the live file, and `(deleted)` for one renamed over or removed. */
function mappings (path: string): { live: number, deleted: number } {
  const lines = readFileSync('/proc/self/maps', 'utf8').split('\n')
  return { live: lines.filter(l => l.endsWith(` ${path}`)).length, deleted: lines.filter(l => l.endsWith(` ${path} (deleted)`)).length }
}

/** Descriptors open on `path`, and on a file that was at `path` before it was renamed over or removed. */
function descriptorsOf (path: string): { live: number, deleted: number } {
  const found = { live: 0, deleted: 0 }
  for (const fd of readdirSync('/proc/self/fd')) {
    let target: string
    try { target = readlinkSync(`/proc/self/fd/${fd}`) } catch { continue }
    if (target === path) found.live++
    if (target === `${path} (deleted)`) found.deleted++
  }
  return found
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

async function get (url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number, headers: Headers, body: Buffer }> {
  const res = await fetch(url, { method, headers })
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) }
}

/** Starts a GET and resolves with the response once its first body bytes arrived; the body is left paused. */
function startReading (url: string): Promise<{ res: IncomingMessage, first: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, res => {
      res.once('data', (first: Buffer) => { res.pause(); resolve({ res, first }) })
    })
    req.on('error', reject)
    req.end()
  })
}

async function waitFor (what: string, check: () => boolean | Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return
    await sleep(25)
  }
  throw new Error(`timed out waiting for ${what}`)
}

for (const { mmap, name, skip } of PATHS) {
  t.test(`${name}: Range, multipart, conditionals and HEAD over real sockets`, { skip }, async t => {
    const { url, logs } = await startService(t, { isos, listen: true, infraEnvs: { [ID]: { ignition: IGNITION } }, env: { MMAP_IMAGE_FILES: mmap } })
    t.match(logs.text, mmap === 'true' ? /image files are served from memory maps/ : /image files are read into buffers \(MMAP_IMAGE_FILES=false\)/, 'the path is said once at start-up')
    t.equal(mappings(isos.x86).live, mmap === 'true' ? 1 : 0, mmap === 'true' ? 'the ISO is mapped once' : 'nothing is mapped')

    for (const path of [ISO, MINIMAL, KERNEL]) {
      const whole = await get(`${url}${path}`)
      t.equal(whole.status, 200, path)
      const size = whole.body.length
      t.equal(Number(whole.headers.get('content-length')), size)
      const etag = whole.headers.get('etag')!
      const head = await get(`${url}${path}`, {}, 'HEAD')
      t.equal(head.status, 200)
      t.equal(head.headers.get('content-length'), String(size), 'HEAD: the same length')
      t.equal(head.body.length, 0, 'HEAD: no body')
      for (const [start, end] of [[0, 0], [100, 199], [32768, 32768 + 65535], [size - 4096, size - 1], [1 << 20, (5 << 20) - 1]] as const) {
        if (end >= size) continue
        const part = await get(`${url}${path}`, { range: `bytes=${start}-${end}` })
        t.equal(part.status, 206)
        t.equal(part.headers.get('content-range'), `bytes ${start}-${end}/${size}`)
        t.ok(part.body.equals(whole.body.subarray(start, end + 1)), `${path} bytes ${start}-${end}`)
      }
      const multi = await get(`${url}${path}`, { range: 'bytes=0-9,40000-40009' })
      t.equal(multi.status, 206)
      t.equal(Number(multi.headers.get('content-length')), multi.body.length, 'multipart Content-Length is exact')
      const text = multi.body.toString('latin1')
      t.ok(text.includes(`Content-Range: bytes 40000-40009/${size}\r\n\r\n${whole.body.subarray(40000, 40010).toString('latin1')}`), 'multipart part bytes')
      t.equal((await get(`${url}${path}`, { range: `bytes=${size}-` })).status, 416)
      t.equal((await get(`${url}${path}`, { 'if-none-match': etag })).status, 304)
      t.equal((await get(`${url}${path}`, { 'if-match': '"other"' })).status, 412)
      const stale = await get(`${url}${path}`, { range: 'bytes=0-9', 'if-range': '"stale"' })
      t.equal(stale.status, 200, 'If-Range with a stale ETag: the whole body')
      t.equal(sha256(stale.body), sha256(whole.body))
    }
  })

  t.test(`${name}: 1,000 responses aborted mid-body leave no file, mapping, descriptor or buffer behind`, { skip }, async t => {
    const { url, app } = await startService(t, { isos, listen: true, infraEnvs: { [ID]: { ignition: IGNITION } }, env: { MMAP_IMAGE_FILES: mmap } })
    t.equal((await get(`${url}${ISO}`, { range: 'bytes=0-0' })).status, 206)
    const files = openFileCount()
    const descriptors = descriptorsOf(isos.x86)
    const mapped = mappings(isos.x86)
    const pool = app.imageStore.get(app.imageStore.keys[0]!)!.pool
    let aborted = 0
    for (let round = 0; round < 50; round++) {
      await Promise.all(Array.from({ length: 20 }, async (_, i) => {
        const { res } = await startReading(`${url}${i % 2 === 0 ? ISO : MINIMAL}`)
        res.destroy()
        aborted++
      }))
    }
    t.equal(aborted, 1000)
    await waitFor('every response to close', async () => await pool.users() === 0)
    t.equal(await pool.users(), 0, 'no response holds a file')
    t.equal(openFileCount(), files, 'no file opened per response')
    t.same(descriptorsOf(isos.x86), descriptors, 'no descriptor left open')
    t.same(mappings(isos.x86), mapped, 'no mapping left behind')
    t.equal(largeBuffersInUse(), 0, 'no read buffer lent')
    const after = await get(`${url}${ISO}`, { range: 'bytes=0-1023' })
    t.equal(after.status, 206, 'and the next request is served')
  })

  t.test(`${name}: an image file replaced while it streams: the stream ends with the old bytes, the next request gets the new`, { skip }, async t => {
    const dir = t.testdir()
    const path = `${dir}/rhcos.iso`
    copyFileSync(isos.x86, path)
    const { url, app } = await startService(t, {
      isos: { x86: path },
      listen: true,
      infraEnvs: { [ID]: { ignition: IGNITION } },
      env: { MMAP_IMAGE_FILES: mmap },
      app: { imageStore: { timing: { identityCheckMs: 3_600_000, retiredLingerMs: 0 } } }
    })
    const old = await get(`${url}${ISO}`)
    const oldKernel = await get(`${url}${KERNEL}`)
    const { res, first } = await startReading(`${url}${ISO}`)

    // A replica or an operator renames a new image over the old one: never truncating the file that is mapped.
    mkdirSync(`${dir}/next`)
    const next = await buildSyntheticIso({ dir: `${dir}/next`, volumeId: `rhcos-${X86_VERSION}`, kernelSize: 6 << 20 })
    renameSync(next, path)
    await app.imageStore.checkReplaced()

    const kernel = await get(`${url}${KERNEL}`)
    t.equal(kernel.body.length, 6 << 20, 'the next request is served from the new file')
    t.not(kernel.body.length, oldKernel.body.length)
    const fresh = await get(`${url}${ISO}`, { range: 'bytes=0-0' })
    t.not(fresh.headers.get('etag'), old.headers.get('etag'), 'with a new ETag')
    t.equal(mappings(path).deleted, mmap === 'true' ? 1 : 0, 'the old file stays mapped while its stream runs')
    t.ok(descriptorsOf(path).deleted > 0, 'the old file stays open while its stream runs')

    const chunks: Buffer[] = [first]
    res.on('data', (chunk: Buffer) => chunks.push(chunk))
    const ended = new Promise(resolve => res.once('end', resolve))
    res.resume()
    await ended
    t.equal(sha256(Buffer.concat(chunks)), sha256(old.body), 'the running stream completed with the old bytes')
    await waitFor('the old file to close', () => mappings(path).deleted === 0 && descriptorsOf(path).deleted === 0)
    t.same(mappings(path), { live: mmap === 'true' ? 1 : 0, deleted: 0 }, 'the old mapping is released after its last response')
    t.equal(descriptorsOf(path).deleted, 0, 'and its descriptors closed')
  })
}
