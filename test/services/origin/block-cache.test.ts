// The block cache on its own: a real HTTP origin on 127.0.0.1 (written here, ranges and If-Match), a real sparse
// file and record on disk, real hole punching.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { OriginChanged, OriginUnavailable } from '../../../services/errors.ts'
import { loadHolePuncher } from '../../../services/io/hole-punch.ts'
import type { BlockCache } from '../../../services/origin/block-cache.ts'
import { BlockRecord } from '../../../services/origin/block-record.ts'
import { CacheBudget } from '../../../services/origin/cache-budget.ts'
import { openBlockCache } from '../../../services/origin/open-cache.ts'
import { RemoteBlocks } from '../../../services/origin/remote-blocks.ts'

const BLOCK = 64 << 10
const quiet = { info: () => {}, warn: () => {}, error: () => {} }

interface Origin { url: string, ranges: string[], file: Buffer, etag: string, failNext: number, delayMs: number }

/** An origin that answers Range requests of one file, conditional on If-Match, and can fail or be slow on purpose. */
async function startOrigin (t: Test, file: Buffer): Promise<Origin> {
  const origin: Origin = { url: '', ranges: [], file, etag: '"v1"', failNext: 0, delayMs: 0 }
  const server = http.createServer((req, res) => {
    const answer = () => {
      const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '')
      if (origin.failNext > 0) { origin.failNext--; res.writeHead(503).end(); return }
      if (req.headers['if-match'] !== undefined && req.headers['if-match'] !== origin.etag) { res.writeHead(412).end(); return }
      if (range === null) { res.writeHead(200, { etag: origin.etag, 'content-length': origin.file.length }).end(origin.file); return }
      origin.ranges.push(req.headers.range!)
      const start = Number(range[1])
      const end = Math.min(origin.file.length - 1, Number(range[2]))
      res.writeHead(206, { etag: origin.etag, 'content-range': `bytes ${start}-${end}/${origin.file.length}`, 'content-length': end - start + 1 })
      res.end(origin.file.subarray(start, end + 1))
    }
    if (origin.delayMs > 0) setTimeout(answer, origin.delayMs)
    else answer()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  origin.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/image.iso`
  return origin
}

async function cacheOf (t: Test, origin: Origin, dir: string, extra: Partial<Parameters<typeof openBlockCache>[0]> = {}): Promise<BlockCache> {
  const opened = await openBlockCache({
    key: 'k',
    url: origin.url,
    client: {},
    files: { cache: join(dir, 'image.blocks'), record: join(dir, 'image.record') },
    blockSize: BLOCK,
    waitMs: 2000,
    log: quiet,
    budget: new CacheBudget(),
    punch: await loadHolePuncher(),
    ...extra
  })
  if ('rangeless' in opened) throw new Error(opened.rangeless)
  t.teardown(() => opened.close())
  return opened
}

const fetchedRanges = (origin: Origin) => origin.ranges.filter(r => r !== 'bytes=0-0')

t.test('blocks are fetched once, written before they are read, and recorded across a reopen', async t => {
  const dir = t.testdir()
  const file = randomBytes(10 * BLOCK + 123)
  const origin = await startOrigin(t, file)
  const cache = await cacheOf(t, origin, dir)
  t.equal(cache.size, file.length)
  t.equal(statSync(join(dir, 'image.blocks')).size, file.length, 'the sparse file has the full size at once')

  const releases = await Promise.all(Array.from({ length: 8 }, () => cache.acquire(BLOCK + 10, 100)))
  releases.forEach(release => release())
  t.same(fetchedRanges(origin), [`bytes=${BLOCK}-${2 * BLOCK - 1}`], 'eight readers of one block: one fetch')
  t.ok(readFileSync(join(dir, 'image.blocks')).subarray(BLOCK, 2 * BLOCK).equals(file.subarray(BLOCK, 2 * BLOCK)), 'its bytes are in the file')

  // Blocks 9 and 10, the last of 123 bytes.
  ;(await cache.acquire(9 * BLOCK, BLOCK + 123))()
  t.ok(readFileSync(join(dir, 'image.blocks')).subarray(9 * BLOCK).equals(file.subarray(9 * BLOCK)), 'the short last block too')
  t.equal(cache.cachedBytes, 2 * BLOCK + 123)
  await cache.close()

  const again = await cacheOf(t, origin, dir)
  t.equal(again.cachedBytes, 2 * BLOCK + 123, 'the record survives a reopen')
  ;(await again.acquire(BLOCK, 2 * BLOCK))()
  t.same(fetchedRanges(origin).slice(3), [`bytes=${2 * BLOCK}-${3 * BLOCK - 1}`], 'only the block it did not have is fetched')
})

t.test('read-ahead fetches what follows without being waited for', async t => {
  const origin = await startOrigin(t, randomBytes(16 * BLOCK))
  const cache = await cacheOf(t, origin, t.testdir())
  ;(await cache.acquire(0, BLOCK, 4 * BLOCK))()
  for (let i = 0; i < 50 && fetchedRanges(origin).length < 5; i++) await new Promise(resolve => setTimeout(resolve, 10))
  t.same(fetchedRanges(origin).sort(), Array.from({ length: 5 }, (_, i) => `bytes=${i * BLOCK}-${(i + 1) * BLOCK - 1}`).sort(), 'the block and four more')
})

t.test('eviction: held blocks stay, others are punched out and forgotten, durably', async t => {
  const dir = t.testdir()
  const file = randomBytes(8 * BLOCK)
  const origin = await startOrigin(t, file)
  let askedElsewhere: number[] = []
  const cache = await cacheOf(t, origin, dir, { heldElsewhere: async blocks => { askedElsewhere = blocks; return blocks.includes(3) ? [3] : [] } })
  ;(await cache.acquire(0, 8 * BLOCK))()
  const held = await cache.acquire(BLOCK, 10)
  const before = statSync(join(dir, 'image.blocks')).blocks
  const freed = await cache.evict(8 * BLOCK)
  t.equal(freed, 6 * BLOCK, 'all but the block held here and the one held elsewhere')
  t.notOk(askedElsewhere.includes(1), 'a block held here is not even offered')
  t.ok(statSync(join(dir, 'image.blocks')).blocks < before, 'the disk is given back')
  held()
  const record = await BlockRecord.open(join(dir, 'image.record'), { size: file.length, blockSize: BLOCK, validator: '"v1"', contentId: cache.contentId })
  t.same(Array.from({ length: 8 }, (_, i) => record.record.has(i)), [false, true, false, true, false, false, false, false], 'the record on disk agrees')
  await record.record.close()
  const count = fetchedRanges(origin).length
  ;(await cache.acquire(0, 8 * BLOCK))()
  t.equal(fetchedRanges(origin).length, count + 6, 'evicted blocks are fetched again when read')
  t.ok(readFileSync(join(dir, 'image.blocks')).equals(file), 'and the file holds the origin\'s bytes, no hole')
})

t.test('the budget evicts the least recently served image first, and never more than it allows', async t => {
  const dir = t.testdir()
  const budget = new CacheBudget(6 * BLOCK)
  const a = await startOrigin(t, randomBytes(4 * BLOCK))
  const b = await startOrigin(t, randomBytes(4 * BLOCK))
  const cacheA = await cacheOf(t, a, join(dir), { budget, files: { cache: join(dir, 'a.blocks'), record: join(dir, 'a.record') } })
  const cacheB = await cacheOf(t, b, join(dir), { budget, files: { cache: join(dir, 'b.blocks'), record: join(dir, 'b.record') } })
  ;(await cacheA.acquire(0, 4 * BLOCK))()
  await new Promise(resolve => setTimeout(resolve, 5))
  ;(await cacheB.acquire(0, 4 * BLOCK))()
  t.ok(budget.usedBytes <= 6 * BLOCK, `within the budget (${budget.usedBytes})`)
  t.equal(cacheB.cachedBytes, 4 * BLOCK, 'the image being read keeps its blocks')
  t.equal(cacheA.cachedBytes, 2 * BLOCK, 'the one served before gave two blocks back')
})

t.test('a transient origin failure is retried; a slow one fails within the bound; a changed file is OriginChanged', async t => {
  const origin = await startOrigin(t, randomBytes(4 * BLOCK))
  let changed = 0
  const cache = await cacheOf(t, origin, t.testdir(), { onChanged: () => { changed++ } })
  origin.failNext = 2
  ;(await cache.acquire(0, 10))()
  t.pass('two 503s, then the block')

  origin.delayMs = 4000
  const started = Date.now()
  await t.rejects(cache.acquire(BLOCK, 10), OriginUnavailable, 'an origin slower than the bound')
  t.ok(Date.now() - started < 3500, 'fails at the bound, not at the origin\'s pace')
  origin.delayMs = 0

  origin.etag = '"v2"'
  await t.rejects(cache.acquire(2 * BLOCK, 10), OriginChanged)
  await t.rejects(cache.acquire(3 * BLOCK, 10), OriginChanged, 'and every later fetch')
  t.equal(changed, 1, 'told once')
  t.equal(cache.changed !== undefined, true)
  ;(await cache.acquire(0, 10))()
  t.pass('cached bytes of the old file are still served')
})

t.test('a file the cache was not made for is not trusted: a new validator starts an empty cache', async t => {
  const dir = t.testdir()
  const origin = await startOrigin(t, randomBytes(4 * BLOCK))
  const first = await cacheOf(t, origin, dir)
  ;(await first.acquire(0, 4 * BLOCK))()
  await first.close()
  origin.file = randomBytes(4 * BLOCK)
  origin.etag = '"v2"'
  const second = await cacheOf(t, origin, dir)
  t.equal(second.cachedBytes, 0, 'nothing of the old file counts')
  ;(await second.acquire(0, 4 * BLOCK))()
  t.ok(readFileSync(join(dir, 'image.blocks')).equals(origin.file), 'the new file\'s bytes')
  writeFileSync(join(dir, 'image.record'), '{ torn')
  await second.close()
  const third = await cacheOf(t, origin, dir)
  t.equal(third.cachedBytes, 0, 'a torn record is no record')
})

t.test('a worker\'s view: asks once for what it does not know, forgets evicted blocks, names those it holds', async t => {
  const asked: Array<[number, number, number]> = []
  const remote = new RemoteBlocks(8 * BLOCK, BLOCK, async (offset, length, readAhead) => { asked.push([offset, length, readAhead]) })
  ;(await remote.acquire(0, 2 * BLOCK, BLOCK))()
  ;(await remote.acquire(10, 100))()
  t.same(asked, [[0, 2 * BLOCK, BLOCK]], 'known blocks are not asked for again')
  const held = await remote.acquire(BLOCK, 10)
  t.same(remote.evicting([0, 1]), [1], 'the held block is named')
  held()
  ;(await remote.acquire(0, 10))()
  t.equal(asked.length, 2, 'the forgotten block is asked for again')
  ;(await remote.acquire(BLOCK, 10))()
  t.equal(asked.length, 2, 'the kept one is not')
})

t.test('without a hole puncher (no koffi, not Linux) nothing is evicted, and a read past the budget fails cleanly', async t => {
  const dir = t.testdir()
  const origin = await startOrigin(t, randomBytes(4 * BLOCK))
  const budget = new CacheBudget(2 * BLOCK)
  const cache = await cacheOf(t, origin, dir, { budget, punch: undefined })
  ;(await cache.acquire(0, 2 * BLOCK))()
  t.equal(await cache.evict(2 * BLOCK), 0, 'evict frees nothing')
  await t.rejects(cache.acquire(2 * BLOCK, 10), OriginUnavailable, 'a block the budget has no room for: OriginUnavailable (a 503), not a crash')
  t.equal(cache.cachedBytes, 2 * BLOCK, 'the cached blocks stay')
  ;(await cache.acquire(0, 2 * BLOCK))()
  t.pass('and still serve')
})
