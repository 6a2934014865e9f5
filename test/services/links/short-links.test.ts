import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'
import { readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { FileLinkStore } from '../../../services/links/file-link-store.ts'
import { RedisLinkStore } from '../../../services/links/redis-link-store.ts'
import { migrateLegacyLinks, ShortLinks, type LinkTarget } from '../../../services/links/short-links.ts'
import { missingTools } from '../../fixtures/tools.ts'
import { freePort } from '../../helper.ts'
import { routeIsos, startService, X86_VERSION } from '../../fixtures/service.ts'

const SECRET_KEY = 'api-key-that-must-never-be-readable-in-the-store'
const target = (imageId: string): LinkTarget => ({ route: 'byapikey', imageId, version: '4.19', arch: 'x86_64', type: 'minimal-iso', credential: { kind: 'api_key', value: SECRET_KEY } })
const hour = () => Date.now() + 3_600_000

t.test('embedded store: replicas sharing DATA_DIR mint one link per target and resolve each other\'s', async t => {
  const dir = t.testdir()
  const a = new ShortLinks(new FileLinkStore(dir))
  const b = new ShortLinks(new FileLinkStore(dir))
  const codes = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? a : b).mint(target('host-1'), hour())))
  t.equal(new Set(codes).size, 1, '20 concurrent mints on two replicas: one code')
  t.same(await b.resolve(codes[0]!), target('host-1'), 'a link minted by one resolves on the other')
  t.not(await a.mint(target('host-2'), hour()), codes[0], 'another target, another code')
  const records = readdirSync(dir).filter(n => /^[0-9a-f]{64}$/.test(n))
  t.equal(records.length, 2, 'one record per target, nothing rewritten')
  for (const name of readdirSync(dir)) {
    const text = readFileSync(join(dir, name), 'latin1')
    t.notOk(text.includes(SECRET_KEY) || text.includes('host-1') || name.includes(codes[0]!), `${name}: no credential, id or code in clear`)
  }
  t.equal(await a.resolve('A'.repeat(22)), undefined, 'an unknown code')
  t.equal(await a.resolve('../../../../etc/passwd'), undefined, 'not a code at all')
  for (const record of records) writeFileSync(join(dir, record), 'garbage')
  t.same(await a.resolve(codes[0]!), target('host-1'), 'a process keeps the links it knows')
  t.equal(await new ShortLinks(new FileLinkStore(dir)).resolve(codes[0]!), undefined, 'a damaged record opens nothing elsewhere (and throws nothing)')
})

t.test('a damaged secret file is refused, never used as a weak key', async t => {
  const dir = t.testdir({ secret: 'not hex at all' })
  await t.rejects(new ShortLinks(new FileLinkStore(dir)).mint(target('host-9'), hour()), /is not a valid short-link secret/)
})

t.test('links expire, and an expired link is minted again', async t => {
  const dir = t.testdir()
  let now = 1_000_000
  const links = new ShortLinks(new FileLinkStore(dir, () => now), undefined, () => now)
  const code = await links.mint(target('host-3'), now + 1000)
  t.ok(await links.resolve(code))
  now += 2000
  t.equal(await links.resolve(code), undefined, 'expired')
  t.equal(await links.mint(target('host-3'), now + 1000), code, 'the same code, stored anew')
  t.ok(await links.resolve(code))
})

t.test('a configured secret gives the same codes on replicas with separate stores', async t => {
  const secret = Buffer.alloc(32, 7)
  const a = new ShortLinks(new FileLinkStore(t.testdir()), secret)
  const b = new ShortLinks(new FileLinkStore(join(t.testdirName, 'other')), secret)
  t.equal(await a.mint(target('host-4'), hour()), await b.mint(target('host-4'), hour()))
})

t.test('short-links.json of earlier versions moves into the sealed store, and its URLs keep working', async t => {
  const dir = t.testdir({ 'short-links.json': JSON.stringify([{ ...target('host-5'), code: 'AbCdEfGhIjKlMnOpQrStUv', expires: hour() }, { ...target('gone'), code: 'ZZZZZZZZZZZZZZZZZZZZZZ', expires: 1 }]) })
  const store = new FileLinkStore(join(dir, 'short-links'))
  t.equal(await migrateLegacyLinks(join(dir, 'short-links.json'), store), 1, 'the expired one is dropped')
  t.same(await new ShortLinks(store).resolve('AbCdEfGhIjKlMnOpQrStUv'), target('host-5'))
  t.notOk(readdirSync(dir).includes('short-links.json'), 'the file with credentials in clear is gone')
  t.equal(await migrateLegacyLinks(join(dir, 'short-links.json'), store), 0, 'nothing to do the second time')
})

async function startRedis (t: Test): Promise<{ url: string, stop: () => Promise<void> }> {
  const port = await freePort()
  const child: ChildProcess = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' })
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    child.kill('SIGKILL')
    await new Promise(resolve => child.once('exit', resolve))
  }
  t.teardown(stop)
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>(resolve => {
      const probe = createServer().listen(port, '127.0.0.1')
      probe.on('listening', () => probe.close(() => resolve(false)))
      probe.on('error', () => resolve(true))
    })
    if (up) break
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return { url: `redis://127.0.0.1:${port}`, stop }
}

t.test('Valkey/Redis store: shared by replicas, TTL in the server, nothing readable in a dump; an outage fails fast', { skip: missingTools('redis-server') }, async t => {
  const redis = await startRedis(t)
  const stores = [new RedisLinkStore(redis.url), new RedisLinkStore(redis.url)]
  t.teardown(() => Promise.all(stores.map(s => s.close())))
  const [a, b] = stores.map(store => new ShortLinks(store))
  const codes = await Promise.all([a!.mint(target('host-6'), hour()), b!.mint(target('host-6'), hour())])
  t.equal(codes[0], codes[1], 'both replicas derive the same code from the secret kept in Redis')
  t.same(await b!.resolve(codes[0]!), target('host-6'))

  const { Redis } = await import('ioredis')
  const client = new Redis(redis.url)
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  const keys = await client.keys('*')
  t.equal(keys.length, 2, 'the secret and one record')
  for (const key of keys) {
    const value = (await client.getBuffer(key))!.toString('latin1')
    t.notOk(key.includes(codes[0]!) || value.includes(SECRET_KEY) || value.includes('host-6'), `${key}: nothing in clear`)
  }
  const record = keys.find(k => !k.endsWith('secret'))!
  const ttl = await client.pttl(record)
  t.ok(ttl > 3_500_000 && ttl <= 3_600_000, `the server expires the record (${ttl} ms left)`)

  await redis.stop()
  const started = Date.now()
  await t.rejects(a!.mint(target('host-7'), hour()), 'minting fails while Redis is down')
  t.ok(Date.now() - started < 3000, `and fails fast (${Date.now() - started} ms)`)
})

t.test('with Redis down, ISOs are served without a Link header and /s/ answers 503', { skip: missingTools('redis-server') }, async t => {
  const redis = await startRedis(t)
  const id = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
  const other = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2d'
  const isos = await routeIsos(t.testdir())
  const ignition = { ignition: Buffer.from('{"ignition":{"version":"3.2.0"}}') }
  const { app } = await startService(t, { isos, infraEnvs: { [id]: ignition, [other]: ignition }, env: { REDIS_URL: redis.url } })
  const url = `/byid/${id}/${X86_VERSION}/x86_64/full.iso`
  const up = await app.inject({ method: 'HEAD', url })
  const link = /^<[^>]+(\/s\/[^>]+)>/.exec(String(up.headers.link))?.[1]
  t.ok(link, 'a Link header while Redis is up')
  t.equal((await app.inject({ method: 'HEAD', url: link! })).statusCode, 200)
  await redis.stop()
  const down = await app.inject({ method: 'HEAD', url: url.replace(id, other) })
  t.equal(down.statusCode, 200, 'the ISO is still served')
  t.equal(down.headers.link, undefined, 'without a Link header: no link could be stored')
  t.equal((await app.inject({ method: 'HEAD', url: link! })).statusCode, 200, 'a link this process already knows still works')
  const short = await app.inject({ method: 'HEAD', url: `/s/${'B'.repeat(22)}/full.iso` })
  t.equal(short.statusCode, 503, 'a link it must look up: 503, retry later')
  t.equal(short.headers['retry-after'], '10')
})
