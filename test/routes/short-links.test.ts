import t from 'tap'
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { jwt } from '../fixtures/fake-assisted.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')
const isos = await routeIsos(t.testdir())

t.test('a 250+ character /byapikey/ URL gets a short link that serves identical bytes', async t => {
  const base = 'https://assisted-image-service-mce.apps.ocp4.example.com'
  const dataDir = `${t.testdirName}-data`
  rmSync(dataDir, { recursive: true, force: true })
  const env = { IMAGE_SERVICE_BASE_URL: base, DATA_DIR: dataDir }
  const { app, upstream } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION } }, env })
  const apiKey = jwt({ infra_env_id: ID, exp: Math.floor(Date.now() / 1000) + 3600, sub_claims: randomBytes(24).toString('hex') })
  const longUrl = `/byapikey/${apiKey}/${X86_VERSION}/x86_64/minimal.iso`
  t.ok(base.length + longUrl.length > 250, `long URL is ${base.length + longUrl.length} characters`)
  const long = await app.inject(longUrl)
  t.equal(long.statusCode, 200)
  const link = /^<([^>]+)>; rel="alternate"$/.exec(long.headers.link as string)
  t.ok(link, 'Link header present')
  const short = link![1]!
  t.ok(short.length < 100, `short link is ${short.length} characters`)
  t.match(short, new RegExp(`^${base}/s/[A-Za-z0-9_-]{22}/minimal\\.iso$`))
  const path = short.slice(base.length)

  upstream.calls.length = 0
  const viaShort = await app.inject(path)
  t.equal(viaShort.statusCode, 200)
  t.ok(viaShort.rawPayload.equals(long.rawPayload), 'identical bytes')
  for (const header of ['content-length', 'etag', 'content-disposition', 'content-type', 'accept-ranges']) t.equal(viaShort.headers[header], long.headers[header], header)
  t.ok(upstream.calls.every(c => c.query.get('api_key') === apiKey), 'the same credential reaches assisted-service')
  const range = await app.inject({ url: path, headers: { range: 'bytes=1000-1999' } })
  t.equal(range.statusCode, 206)
  t.ok(range.rawPayload.equals(long.rawPayload.subarray(1000, 2000)))
  const head = await app.inject({ method: 'HEAD', url: path })
  t.equal(head.headers['content-length'], long.headers['content-length'])

  t.equal((await app.inject(longUrl)).headers.link, long.headers.link, 'minted once per target')
  t.equal((await app.inject(path.replace('minimal.iso', 'full.iso'))).statusCode, 404, 'the filename must match')
  t.equal((await app.inject(`/s/${'A'.repeat(22)}/minimal.iso`)).statusCode, 404, 'unknown code')
  t.equal(statSync(`${dataDir}/short-links`).mode & 0o707, 0o700, 'the link store is the owner\'s (and its group\'s), never others\'')
  const records = readdirSync(`${dataDir}/short-links`).filter(n => /^[0-9a-f]{64}$/.test(n))
  t.equal(records.length, 1, 'one sealed record')
  t.equal(statSync(`${dataDir}/short-links/${records[0]}`).mode & 0o707, 0o600)
  const stored = readFileSync(`${dataDir}/short-links/${records[0]}`, 'utf8')
  t.notOk(stored.includes(apiKey) || stored.includes(ID) || records[0]!.includes(path.split('/')[2]!), 'neither the credential, the id nor the code is readable in the store')

  await app.close()
  const again = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION } }, env: { IMAGE_SERVICE_BASE_URL: base, DATA_DIR: dataDir } })
  t.equal((await again.app.inject({ method: 'HEAD', url: path })).statusCode, 200, 'links survive a restart')
})

t.test('links expire', async t => {
  const { app } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION } }, env: { SHORT_LINK_TTL: '1' } })
  const res = await app.inject({ method: 'HEAD', url: `/byid/${ID}/${X86_VERSION}/x86_64/full.iso` })
  const path = new URL(/^<([^>]+)>/.exec(res.headers.link as string)![1]!).pathname
  t.equal((await app.inject({ method: 'HEAD', url: path })).statusCode, 200)
  await new Promise(resolve => setTimeout(resolve, 1100))
  t.equal((await app.inject({ method: 'HEAD', url: path })).statusCode, 404)
})
