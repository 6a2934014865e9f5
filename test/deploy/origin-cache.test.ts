// deploy/origin-cache/nginx.conf, run as shipped, in front of a real nginx origin: whatever Range requests
// clients make, the origin sees each 1 MiB slice of a file once, and the validators the service relies on
// (strong ETag, Last-Modified, If-Range, If-Match) pass through the cache unchanged.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startNginxOrigin, type NginxOrigin } from '../fixtures/nginx-origin.ts'
import { missingTools } from '../fixtures/tools.ts'

const MiB = 1 << 20
const FILE_SIZE = 6 * MiB
const RANGE_SIZE = 256 * 1024
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

function shuffled<T> (items: T[]): T[] {
  const copy = [...items]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = randomInt(i + 1)
    ;[copy[i], copy[j]] = [copy[j]!, copy[i]!]
  }
  return copy
}

/** Ranges covering the file twice: once aligned on RANGE_SIZE, once shifted so that ranges straddle slices. */
function coveringRanges (): Array<[number, number]> {
  const ranges: Array<[number, number]> = []
  for (const shift of [0, 100_000]) {
    if (shift > 0) ranges.push([0, shift - 1])
    for (let start = shift; start < FILE_SIZE; start += RANGE_SIZE) ranges.push([start, Math.min(start + RANGE_SIZE, FILE_SIZE) - 1])
  }
  return ranges
}

/** The origin's log once `count` requests are in it (each is logged as its response ends). */
async function originLog (origin: NginxOrigin, count: number) {
  for (let i = 0; i < 100 && origin.accessLog().length < count; i++) await sleep(20)
  return origin.accessLog()
}

function isAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

function nginxProcessesIn (dir: string): string {
  return spawnSync('pgrep', ['-a', '-f', dir], { encoding: 'utf8' }).stdout
}

t.test('the shipped origin cache fetches each 1 MiB slice from the origin once', { skip: missingTools('nginx', 'pgrep') }, async t => {
  const root = t.testdir()
  const file = randomBytes(FILE_SIZE)
  writeFileSync(join(root, 'rhcos-live.iso'), file)
  const origin = await startNginxOrigin(t, { root, limitRate: '16m' })
  const cache = await startNginxOrigin(t, { proxyTo: origin.url })
  const iso = `${cache.url}/rhcos-live.iso`

  const ranges = shuffled(coveringRanges())
  const answers = await Promise.all(ranges.map(async ([start, end]) => {
    const res = await fetch(iso, { headers: { range: `bytes=${start}-${end}` } })
    return { start, end, res, body: Buffer.from(await res.arrayBuffer()) }
  }))
  for (const { start, end, res, body } of answers) {
    if (res.status !== 206 || res.headers.get('content-range') !== `bytes ${start}-${end}/${FILE_SIZE}` || !body.equals(file.subarray(start, end + 1))) {
      t.fail(`bytes=${start}-${end}: ${res.status} ${res.headers.get('content-range')}, ${body.length} bytes, not the file's`)
    }
  }
  t.pass(`${ranges.length} concurrent Range requests, each answered 206 with the file's bytes`)
  const full = await fetch(iso)
  t.equal(full.status, 200)
  t.equal(full.headers.get('x-cache-status'), 'HIT', 'a full GET after them is a cache hit')
  t.ok(Buffer.from(await full.arrayBuffer()).equals(file), 'and is the whole file')

  const slices = Array.from({ length: FILE_SIZE / MiB }, (_, i) => `bytes=${i * MiB}-${(i + 1) * MiB - 1}`)
  const fetched = await originLog(origin, slices.length)
  t.same(fetched.map(request => request.range).sort(), [...slices].sort(), 'the origin was asked for each 1 MiB slice exactly once')
  t.same(new Set(fetched.map(request => `${request.method} ${request.uri} ${request.status} ${request.bytes} if-range:${request.ifRange}`)),
    new Set([`GET /rhcos-live.iso 206 ${MiB} if-range:`]), 'by GET, answered 206 with 1 MiB, and with no If-Range')

  const direct = await fetch(`${origin.url}/rhcos-live.iso`, { method: 'HEAD' })
  const etag = direct.headers.get('etag')!
  const lastModified = direct.headers.get('last-modified')!
  t.match(etag, /^"[^"]+"$/, `the origin's ETag ${etag} is strong`)
  t.equal(full.headers.get('etag'), etag, 'the ETag reaches clients unchanged')
  t.equal(full.headers.get('last-modified'), lastModified, 'so does Last-Modified')
  t.equal(full.headers.get('content-length'), String(FILE_SIZE))

  // What the service sends: a block conditional on the validator its cache was built from.
  const conditional = async (headers: Record<string, string>) => {
    const res = await fetch(iso, { headers: { range: `bytes=${MiB}-${2 * MiB - 1}`, ...headers } })
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()) }
  }
  const ifRange = await conditional({ 'if-range': etag })
  t.equal(ifRange.status, 206, 'If-Range with the ETag gets 206')
  t.ok(ifRange.body.equals(file.subarray(MiB, 2 * MiB)), 'with the block')
  t.equal((await conditional({ 'if-range': '"another"' })).status, 200, 'If-Range with another ETag gets the whole file')
  t.equal((await conditional({ 'if-match': etag })).status, 206, 'If-Match with the ETag gets 206')
  t.equal((await conditional({ 'if-match': '"another"' })).status, 412, 'If-Match with another ETag gets 412')
  t.equal((await conditional({ 'if-unmodified-since': lastModified })).status, 206, 'If-Unmodified-Since Last-Modified gets 206')
  t.equal((await conditional({ 'if-unmodified-since': new Date(Date.parse(lastModified) - 60_000).toUTCString() })).status, 412,
    'If-Unmodified-Since an earlier date gets 412')
  t.equal(origin.accessLog().length, slices.length + 1, 'none of which reached the origin (the one more is the HEAD above)')

  const stoppedOrigin = origin.processIds()
  await origin.stop()
  t.same(stoppedOrigin.filter(isAlive), [], `stop() ended the origin's master and children: ${stoppedOrigin}`)
  const whileDown = await fetch(iso)
  t.ok(Buffer.from(await whileDown.arrayBuffer()).equals(file), 'with the origin stopped, the cache still serves the whole file')
  await origin.start()
  t.equal((await fetch(`${origin.url}/rhcos-live.iso`, { method: 'HEAD' })).headers.get('etag'), etag, 'the origin restarts on its port')

  const processes = [...origin.processIds(), ...cache.processIds()]
  t.ok(stoppedOrigin.length >= 2 && processes.length >= 5, `each a master and its children: ${stoppedOrigin}, then ${processes}`)
  await cache.stop()
  await origin.stop()
  t.same(processes.filter(isAlive), [], 'stop() leaves none of their processes')
  t.equal(nginxProcessesIn(origin.dir) + nginxProcessesIn(cache.dir), '', `no process names ${origin.dir} or ${cache.dir}`)
})
