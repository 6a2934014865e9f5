import t from 'tap'
import { rename } from 'node:fs/promises'
import { build } from '../helper.ts'
import { buildSyntheticIso } from '../../services/coreos/synthetic-iso.ts'

t.test('/live is always 200', async t => {
  const { app } = await build(t)
  const res = await app.inject('/live')
  t.equal(res.statusCode, 200)
})

t.test('/health follows the image store: 503 with what is pending, 200 once every image is ready', async t => {
  const dir = t.testdir({ iso: {}, src: {}, envs: {} })
  const late = `${dir}/iso/late.iso`
  const osImages = [{ openshift_version: '4.17', cpu_architecture: 'x86_64', url: `file://${late}`, version: '417.94.20' }]
  const { app } = await build(t, { OS_IMAGES: JSON.stringify(osImages), INFRAENVS_DIR: `${dir}/envs` }, { app: { imageStore: { timing: { retryBaseMs: 20, retryMaxMs: 50 } } } })
  await app.ready()
  let res = await app.inject('/health')
  t.equal(res.statusCode, 503)
  t.ok(res.headers['retry-after'])
  t.match(res.json(), { status: 'not ready', pending: ['417.94.20@x86_64@full-iso'] })
  await rename(await buildSyntheticIso({ dir: `${dir}/src`, volumeId: 'rhcos-417.94.20' }), late)
  for (let i = 0; i < 200 && res.statusCode !== 200; i++) {
    await new Promise(resolve => setTimeout(resolve, 25))
    res = await app.inject('/health')
  }
  t.equal(res.statusCode, 200)
  t.same(res.json(), { status: 'ready' })
})

t.test('/metrics uses upstream\'s names and buckets, with route patterns as handlers', async t => {
  const { app } = await build(t)
  app.get('/bytoken/:token/probe', async () => 'x')
  await app.inject('/bytoken/SECRET-TOKEN-123/probe')
  await app.inject('/live')
  const res = await app.inject('/metrics')
  t.equal(res.statusCode, 200)
  t.match(res.body, /assisted_image_service_http_request_duration_seconds_bucket\{le="600",service="",handler="\/bytoken\/:token\/probe",method="GET",code="200"\} 1/)
  t.match(res.body, /assisted_image_service_http_response_size_bytes_bucket\{le="1000000",service="",handler="\/live",method="GET",code="200"\} 1/)
  t.match(res.body, /assisted_image_service_http_requests_inflight/)
  t.match(res.body, /assisted_image_service_process_cpu_seconds_total/)
  t.notMatch(res.body, /SECRET-TOKEN-123/)
})

t.test('one error handler: domain errors keep status and code, 5xx hides internals', async t => {
  const { app, logs } = await build(t)
  const { ImageNotReady, upstreamStatus } = await import('../../services/errors.ts')
  app.get('/domain', async () => { throw new ImageNotReady('4.18.1', 'x86_64') })
  app.get('/upstream', async () => { throw upstreamStatus(409, 'ignition') })
  app.get('/boom', async () => { throw new Error('secret internal path /var/lib/x') })
  app.get('/typed/:n', { schema: { params: { type: 'object', properties: { n: { type: 'integer' } } } } }, async () => 'ok')
  let res = await app.inject('/domain')
  t.equal(res.statusCode, 503)
  t.same(res.json(), { code: 'IMG_NOT_READY', message: 'OS image 4.18.1 (x86_64) is not ready yet' })
  t.equal(res.headers['retry-after'], '30')
  res = await app.inject('/upstream')
  t.equal(res.statusCode, 409, 'assisted-service\'s own status passes through')
  t.same(res.json(), { code: 'UPSTREAM_STATUS', message: 'assisted-service answered 409 to the ignition request' })
  res = await app.inject('/boom')
  t.equal(res.statusCode, 500)
  t.same(res.json(), { code: 'INTERNAL', message: 'internal error' })
  t.match(logs.text, /secret internal path/, 'the cause is logged')
  res = await app.inject('/typed/abc')
  t.equal(res.statusCode, 400)
  t.equal(res.json().code, 'BAD_REQUEST')
  res = await app.inject('/nowhere')
  t.equal(res.statusCode, 404)
})

t.test('under pressure: 503 + Retry-After, probes and metrics still answer', async t => {
  const { app } = await build(t, { MAX_HEAP_USED_BYTES: '1' })
  await new Promise(resolve => setTimeout(resolve, 1200))
  const res = await app.inject('/images/x?version=1&type=full-iso')
  t.equal(res.statusCode, 503)
  t.equal(res.headers['retry-after'], '10')
  t.equal((await app.inject('/live')).statusCode, 200)
  t.equal((await app.inject('/health')).statusCode, 200)
  t.equal((await app.inject('/metrics')).statusCode, 200)
})

t.test('CORS only when ALLOWED_DOMAINS is set, only on image routes', async t => {
  const { app } = await build(t, { ALLOWED_DOMAINS: 'https://console.example, https://other.example' })
  let res = await app.inject({ url: '/images/abc', headers: { origin: 'https://console.example' } })
  t.equal(res.headers['access-control-allow-origin'], 'https://console.example')
  t.match(res.headers.vary, /Origin/)
  res = await app.inject({ url: '/images/abc', headers: { origin: 'https://evil.example' } })
  t.equal(res.headers['access-control-allow-origin'], undefined)
  t.match(res.headers.vary, /Origin/)
  res = await app.inject({ method: 'OPTIONS', url: '/images/abc', headers: { origin: 'https://other.example', 'access-control-request-method': 'GET' } })
  t.equal(res.statusCode, 204)
  t.equal(res.headers['access-control-allow-origin'], 'https://other.example')
  t.equal(res.headers['access-control-allow-methods'], 'GET, HEAD')
  t.equal(res.headers['access-control-allow-headers'], 'Authorization, Content-Type')
  t.equal(res.headers['access-control-max-age'], '600')
  res = await app.inject({ url: '/live', headers: { origin: 'https://console.example' } })
  t.equal(res.headers['access-control-allow-origin'], undefined)

  const { app: star } = await build(t, { ALLOWED_DOMAINS: '*' })
  res = await star.inject({ url: '/images/abc', headers: { origin: 'https://any.example' } })
  t.equal(res.headers['access-control-allow-origin'], 'https://any.example')

  const { app: none } = await build(t)
  res = await none.inject({ url: '/images/abc', headers: { origin: 'https://console.example' } })
  t.equal(res.headers['access-control-allow-origin'], undefined)
})

t.test('no secret reaches the log', async t => {
  const { app, logs } = await build(t)
  app.get('/bytoken/:token/:version', async () => 'x')
  app.get('/byapikey/:key/:version', async () => { throw new Error('failure while serving') })
  await app.inject({ url: '/bytoken/PLANTED-TOKEN/4.18', headers: { authorization: 'Bearer PLANTED-BEARER', 'image-token': 'PLANTED-IMAGE-TOKEN' } })
  await app.inject('/byapikey/PLANTED-APIKEY/4.18')
  await app.inject('/images/abc?api_key=PLANTED-QUERY-KEY&image_token=PLANTED-QUERY-TOKEN&version=1')
  t.ok(logs.lines.length >= 3)
  t.notMatch(logs.text, /PLANTED/)
  const line = logs.records().find(r => r.route === '/images/:imageId')!
  t.match(line, { status: 400, method: 'GET', url: '/images/abc?api_key=[REDACTED]&image_token=[REDACTED]&version=1' })
  t.type(line.bytes, 'number')
  t.type(line.durationMs, 'number')
})

t.test('one log line per request at info; none below the configured level, errors always', async t => {
  const info = await build(t, { LOG_LEVEL: 'info' })
  await info.app.inject('/live')
  t.equal(info.logs.text.split('\n').filter(l => l.includes('"msg":"request"') && l.includes('"route":"/live"')).length, 1, 'info: the request is logged')
  const warn = await build(t, { LOG_LEVEL: 'warn' })
  warn.app.get('/boom', async () => { throw new Error('boom') })
  await warn.app.inject('/live')
  await warn.app.inject('/boom')
  const lines = warn.logs.text.split('\n').filter(l => l.includes('"msg":"request"'))
  t.equal(lines.length, 1, 'warn: only the failed request has its line')
  t.match(lines[0], /"route":"\/boom"/)
})
