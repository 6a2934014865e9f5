import t from 'tap'
import { request } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'
import { jwt } from '../fixtures/fake-assisted.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')
const URL = `/byid/${ID}/${X86_VERSION}/x86_64/full.iso`
const isos = await routeIsos(t.testdir())

t.test('ranges, multipart, 416, conditionals, cache and coalescing', async t => {
  const { app, upstream } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION, lastModified: 'Wed, 01 Jan 2025 00:00:00 GMT' } } })
  const whole = await app.inject(URL)
  const bytes = whole.rawPayload
  const size = bytes.length
  const etag = whole.headers.etag as string
  t.equal(upstream.calls.length, 2)

  let res = await app.inject({ url: URL, headers: { range: 'bytes=100-199' } })
  t.equal(res.statusCode, 206)
  t.equal(res.headers['content-range'], `bytes 100-199/${size}`)
  t.ok(res.rawPayload.equals(bytes.subarray(100, 200)))
  res = await app.inject({ url: URL, headers: { range: 'bytes=-500' } })
  t.ok(res.rawPayload.equals(bytes.subarray(size - 500)), 'suffix range')
  res = await app.inject({ url: URL, headers: { range: `bytes=${size - 10}-` } })
  t.equal(res.headers['content-range'], `bytes ${size - 10}-${size - 1}/${size}`, 'open range')
  res = await app.inject({ url: URL, headers: { range: `bytes=${size - 10}-${size + 1000}` } })
  t.equal(res.rawPayload.length, 10, 'end past EOF is clamped')
  res = await app.inject({ url: URL, headers: { range: `bytes=${size}-` } })
  t.equal(res.statusCode, 416)
  t.equal(res.headers['content-range'], `bytes */${size}`)
  res = await app.inject({ url: URL, headers: { range: 'bytes=abc' } })
  t.equal(res.statusCode, 200, 'a malformed Range is ignored')
  t.equal(res.rawPayload.length, size)

  res = await app.inject({ url: URL, headers: { range: 'bytes=0-9,32768-32777' } })
  t.equal(res.statusCode, 206)
  const boundary = /boundary=(\w+)/.exec(res.headers['content-type'] as string)![1]
  const body = res.rawPayload.toString('latin1')
  t.equal(Number(res.headers['content-length']), res.rawPayload.length, 'multipart Content-Length is exact')
  t.match(body, `--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-9/${size}\r\n\r\n${bytes.subarray(0, 10).toString('latin1')}`)
  t.match(body, `Content-Range: bytes 32768-32777/${size}\r\n\r\n${bytes.subarray(32768, 32778).toString('latin1')}\r\n--${boundary}--\r\n`)

  res = await app.inject({ url: URL, headers: { range: 'bytes=0-9', 'if-range': etag } })
  t.equal(res.statusCode, 206, 'If-Range with the current ETag')
  res = await app.inject({ url: URL, headers: { range: 'bytes=0-9', 'if-range': '"stale"' } })
  t.equal(res.statusCode, 200, 'If-Range with a stale ETag: whole body')
  res = await app.inject({ url: URL, headers: { range: 'bytes=0-9', 'if-range': 'Wed, 01 Jan 2025 00:00:00 GMT' } })
  t.equal(res.statusCode, 206, 'If-Range with the Last-Modified date')
  t.equal((await app.inject({ url: URL, headers: { 'if-none-match': etag } })).statusCode, 304)
  t.equal((await app.inject({ url: URL, headers: { 'if-match': '"other"' } })).statusCode, 412)
  t.equal((await app.inject({ url: URL, headers: { 'if-match': etag } })).statusCode, 200)
  t.equal((await app.inject({ url: URL, headers: { 'if-modified-since': 'Thu, 02 Jan 2025 00:00:00 GMT' } })).statusCode, 304)
  t.equal((await app.inject({ url: URL, headers: { 'if-unmodified-since': 'Tue, 31 Dec 2024 00:00:00 GMT' } })).statusCode, 412)

  // A BMC's many concurrent Range requests: one upstream call per endpoint at most (answers cached).
  upstream.calls.length = 0
  const token = jwt({ sub: ID })
  const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => app.inject({ url: `/bytoken/${token}/${X86_VERSION}/x86_64/full.iso`, headers: { range: `bytes=${i * 4096}-${i * 4096 + 4095}` } })))
  t.ok(answers.every(a => a.statusCode === 206))
  t.equal(upstream.calls.length, 2, '20 concurrent requests, 2 upstream calls (ignition + infra-env)')
  t.equal(new Set(answers.map(a => a.headers.etag)).size, 1, 'one ETag for them all')
  t.match((await app.inject('/metrics')).body, /assisted_image_service_upstream_cache_hits_total\{endpoint="ignition"\} [1-9]/)
})

t.test('the ETag changes when the host content changes', async t => {
  const infraEnvs = { [ID]: { ignition: IGNITION } }
  const { app } = await startService(t, { isos, infraEnvs, env: { UPSTREAM_CACHE_TTL: '0' } })
  const first = await app.inject(URL)
  infraEnvs[ID].ignition = Buffer.from('{"ignition":{"version":"3.2.0"},"changed":true}')
  const second = await app.inject(URL)
  t.not(first.headers.etag, second.headers.etag)
  t.equal(first.headers['content-length'], second.headers['content-length'])
})

t.test('a client that leaves releases its slot and cancels its upstream call', async t => {
  const slow = '11111111-1111-4111-8111-111111111111'
  const { upstream, url, app } = await startService(t, { isos, listen: true, infraEnvs: { [slow]: { ignition: IGNITION, delayMs: 3000 }, [ID]: { ignition: IGNITION } }, env: { MAX_CONCURRENT_REQUESTS: '1' } })
  const req = request(`${url}/byid/${slow}/${X86_VERSION}/x86_64/full.iso`)
  req.on('error', () => {})
  req.end()
  for (let i = 0; i < 100 && upstream.calls.length < 2; i++) await sleep(20)
  t.match((await app.inject('/metrics')).body, /^assisted_image_service_limited_requests_active 1$/m)
  req.destroy()
  await sleep(200)
  t.match((await app.inject('/metrics')).body, /^assisted_image_service_limited_requests_active 0$/m, 'slot released')
  t.ok(upstream.calls.filter(c => c.path.includes(slow)).every(c => c.closedEarly), 'upstream calls aborted')
  const next = await fetch(`${url}${URL}`, { headers: { range: 'bytes=0-0' } })
  t.equal(next.status, 206, 'the next request gets the slot')
})

t.test('no secret in logs or metrics', async t => {
  const { app, logs } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION } } })
  const token = jwt({ sub: ID, secret: 'PLANTED' })
  await app.inject({ url: `/bytoken/${token}/${X86_VERSION}/x86_64/full.iso`, headers: { range: 'bytes=0-0', authorization: 'Bearer PLANTED-AUTH', 'image-token': 'PLANTED-H' } })
  await app.inject(`/byapikey/${token}/${X86_VERSION}/x86_64/full.iso?api_key=PLANTED-Q`)
  await app.inject(`/images/${ID}?version=${X86_VERSION}&type=full-iso&image_token=PLANTED-IT&api_key=PLANTED-AK`)
  await app.inject(`/bytoken/${token}/nope/x86_64/full.iso`)
  const metrics = (await app.inject('/metrics')).body
  for (const secret of [token, 'PLANTED']) {
    t.notOk(logs.text.includes(secret), `logs free of ${secret.slice(0, 10)}`)
    t.notOk(metrics.includes(secret), `metrics free of ${secret.slice(0, 10)}`)
  }
  t.match(metrics, /handler="\/bytoken\/:token"/)
})

t.test('CORS headers reach streamed image responses too', async t => {
  const { app } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION } }, env: { ALLOWED_DOMAINS: 'https://console.example' } })
  const res = await app.inject({ url: URL, headers: { origin: 'https://console.example', range: 'bytes=0-0' } })
  t.equal(res.statusCode, 206)
  t.equal(res.headers['access-control-allow-origin'], 'https://console.example')
  t.match(res.headers.vary, /Origin/)
  const preflight = await app.inject({ method: 'OPTIONS', url: URL, headers: { origin: 'https://console.example', 'access-control-request-method': 'GET' } })
  t.equal(preflight.statusCode, 204, 'preflight answered without upstream or readiness')
})
