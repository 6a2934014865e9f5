import t from 'tap'
import { execFileSync, spawnSync } from 'node:child_process'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { Readable } from 'node:stream'
import { once } from 'node:events'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { listen } from '../helper.ts'
import { handleShutdown } from '../../server.ts'

interface Answer { status: number, headers: Record<string, string | string[] | undefined>, body: string }

function get (url: string, ca?: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https') ? httpsRequest : httpRequest)(url, { ...(ca !== undefined ? { ca } : {}), agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks).toString() }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

function makeCert (dir: string): { cert: string, key: string } {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`], { stdio: 'ignore' })
  return { cert: `${dir}/cert.pem`, key: `${dir}/key.pem` }
}

// With no OS image configured, the real image routes answer 400 (version missing): proof they were reached.

t.test('HTTPS on LISTEN_PORT when cert and key are set', async t => {
  const dir = t.testdir()
  const { cert, key } = makeCert(dir)
  const { url } = await listen(t, { HTTPS_CERT_FILE: cert, HTTPS_KEY_FILE: key })
  const ca = (await import('node:fs')).readFileSync(cert, 'utf8')
  t.match(url, /^https:/)
  t.equal((await get(`${url}/live`, ca)).status, 200)
  t.equal((await get(`${url}/images/abc`, ca)).status, 400)
})

t.test('TLS + HTTP_LISTEN_PORT: plain port serves only PXE routes and probes', async t => {
  const dir = t.testdir()
  const { cert, key } = makeCert(dir)
  const { url, extraPort } = await listen(t, { HTTPS_CERT_FILE: cert, HTTPS_KEY_FILE: key, HTTP_LISTEN_PORT: '0' })
  const ca = (await import('node:fs')).readFileSync(cert, 'utf8')
  t.ok(extraPort)
  const plain = `http://127.0.0.1:${extraPort}`
  t.equal((await get(`${url}/images/abc`, ca)).status, 400, 'TLS port serves everything')
  t.equal((await get(`${url}/byid/0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c/4.18/x86_64/full.iso`, ca)).status, 404, 'an ISO route is reached on the TLS port')
  t.equal((await get(`${plain}/images/abc`)).status, 404, 'ISO routes are absent on the plain port')
  t.match((await get(`${plain}/byid/0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c/4.18/x86_64/full.iso`)).body, /not served on the plain-HTTP port/)
  t.equal((await get(`${plain}/images/abc/pxe-initrd`)).status, 400, 'pxe-initrd is served')
  t.equal((await get(`${plain}/boot-artifacts/kernel`)).status, 400, 'boot artifacts are served')
  for (const path of ['/live', '/health', '/metrics']) t.equal((await get(`${plain}${path}`)).status, 200, path)
})

t.test('no TLS: plain HTTP on LISTEN_PORT and on a different HTTP_LISTEN_PORT, unrestricted', async t => {
  const { url, extraPort } = await listen(t, { HTTP_LISTEN_PORT: '0' })
  t.match(url, /^http:/)
  t.equal((await get(`${url}/images/abc`)).status, 400)
  t.equal((await get(`http://127.0.0.1:${extraPort}/images/abc`)).status, 400, 'not restricted without TLS')
})

/** A limited route whose body flows only while the test lets it. */
function addSlowRoute (app: FastifyInstance, streams: Readable[]): void {
  app.get('/slow/:n', { config: { limited: true } }, async function slow (request, reply) {
    const body = new Readable({ read () {} })
    body.push('first chunk\n')
    streams.push(body)
    return reply.header('content-type', 'text/plain').send(body)
  })
}

function startGet (url: string): { req: ReturnType<typeof httpRequest>, response: Promise<import('node:http').IncomingMessage> } {
  const req = httpRequest(url, { agent: false })
  const response = new Promise<import('node:http').IncomingMessage>((resolve, reject) => {
    req.on('response', resolve)
    req.on('error', reject)
  })
  req.end()
  return { req, response }
}

/** The limiter as /metrics shows it. */
async function limiterGauge (fastify: FastifyInstance, which: 'active' | 'queued'): Promise<number> {
  const text = (await fastify.inject('/metrics')).body
  return Number(new RegExp(`^assisted_image_service_limited_requests_${which} (\\d+)$`, 'm').exec(text)?.[1])
}

t.test('limiter: a slot is held until the body is sent, then the queue moves', async t => {
  const streams: Readable[] = []
  const { url, fastify } = await listen(t, { MAX_CONCURRENT_REQUESTS: '1' }, app => addSlowRoute(app, streams))
  const a = startGet(`${url}/slow/a`)
  const resA = await a.response
  const b = startGet(`${url}/slow/b`)
  await sleep(100)
  t.equal((await limiterGauge(fastify, 'active')), 1)
  t.equal((await limiterGauge(fastify, 'queued')), 1)
  t.equal(streams.length, 1, 'b has not reached its handler')
  resA.resume()
  streams[0]!.push(null)
  const resB = await b.response
  t.equal(resB.statusCode, 200)
  t.equal(streams.length, 2)
  streams[1]!.push(null)
  resB.resume()
  await once(resB, 'end')
  await sleep(50)
  t.equal((await limiterGauge(fastify, 'active')), 0)
})

t.test('limiter: a client that disconnects releases its slot at once', async t => {
  const streams: Readable[] = []
  const { url, fastify } = await listen(t, { MAX_CONCURRENT_REQUESTS: '1' }, app => addSlowRoute(app, streams))
  const a = startGet(`${url}/slow/a`)
  await a.response
  const b = startGet(`${url}/slow/b`)
  await sleep(100)
  t.equal((await limiterGauge(fastify, 'queued')), 1)
  a.req.destroy()
  const resB = await b.response
  t.equal(resB.statusCode, 200)
  streams[1]!.push(null)
  resB.resume()
  await once(resB, 'end')
})

t.test('limiter: a queued client that disconnects leaves the queue', async t => {
  const streams: Readable[] = []
  const { url, fastify } = await listen(t, { MAX_CONCURRENT_REQUESTS: '1' }, app => addSlowRoute(app, streams))
  const a = startGet(`${url}/slow/a`)
  const resA = await a.response
  const b = startGet(`${url}/slow/b`)
  b.response.catch(() => {})
  await sleep(100)
  t.equal((await limiterGauge(fastify, 'queued')), 1)
  b.req.destroy()
  await sleep(100)
  t.equal((await limiterGauge(fastify, 'queued')), 0)
  streams[0]!.push(null)
  resA.resume()
  await once(resA, 'end')
})

t.test('limiter: waiting longer than REQUEST_QUEUE_TIMEOUT gives 503 + Retry-After', async t => {
  const streams: Readable[] = []
  const { url } = await listen(t, { MAX_CONCURRENT_REQUESTS: '1', REQUEST_QUEUE_TIMEOUT: '1' }, app => addSlowRoute(app, streams))
  const a = startGet(`${url}/slow/a`)
  const resA = await a.response
  const answer = await get(`${url}/slow/b`)
  t.equal(answer.status, 503)
  t.equal(answer.headers['retry-after'], '1')
  t.equal((await get(`${url}/live`)).status, 200, 'probes are never queued')
  streams[0]!.push(null)
  resA.resume()
})

t.test('SIGTERM: stop accepting, finish in-flight responses, exit 0', async t => {
  const streams: Readable[] = []
  const { url, fastify } = await listen(t, {}, app => addSlowRoute(app, streams))
  const a = startGet(`${url}/slow/a`)
  const resA = await a.response
  const chunks: Buffer[] = []
  resA.on('data', (c: Buffer) => chunks.push(c))
  let exitCode: number | undefined
  handleShutdown(fastify, 10, code => { exitCode = code })
  process.emit('SIGTERM')
  await sleep(100)
  await t.rejects(get(`${url}/live`), 'new connections are refused')
  t.equal(exitCode, undefined, 'still serving the in-flight response')
  streams[0]!.push('last chunk\n')
  streams[0]!.push(null)
  await once(resA, 'end')
  t.equal(Buffer.concat(chunks).toString(), 'first chunk\nlast chunk\n')
  for (let i = 0; i < 50; i++) {
    if (exitCode !== undefined) break
    await sleep(20)
  }
  t.equal(exitCode, 0)
})

t.test('SIGTERM: after the grace period the plain-HTTP listener\'s connections are closed too', async t => {
  const streams: Readable[] = []
  const { fastify, extraPort, extraServer } = await listen(t, { HTTP_LISTEN_PORT: '0' }, app => addSlowRoute(app, streams))
  const stuck = startGet(`http://127.0.0.1:${extraPort}/slow/stuck`)
  const res = await stuck.response
  res.on('error', () => {}) // 'aborted' when the server cuts it: that is the point
  res.resume()
  let exitCode: number | undefined
  handleShutdown(fastify, 0.3, code => { exitCode = code }, extraServer)
  process.emit('SIGTERM')
  const closed = await Promise.race([new Promise(resolve => res.on('close', () => resolve(true))), sleep(3000).then(() => false)])
  t.ok(closed, 'the never-ending response on the extra port was cut at the end of the grace period')
  t.equal(exitCode, 0)
  for (const stream of streams) stream.push(null)
})

t.test('invalid configuration: exit 1 with one message listing every problem', async t => {
  const server = fileURLToPath(new URL('../../server.ts', import.meta.url))
  const dir = t.testdir()
  const result = spawnSync(process.execPath, [server], {
    cwd: dir,
    env: { PATH: process.env.PATH, OS_IMAGES: 'not json', MAX_CONCURRENT_REQUESTS: '0', LOG_LEVEL: 'chatty' },
    encoding: 'utf8',
    timeout: 20_000
  })
  t.equal(result.status, 1)
  t.match(result.stderr, /invalid configuration/)
  t.match(result.stderr, /OS_IMAGES: invalid JSON/)
  t.match(result.stderr, /MAX_CONCURRENT_REQUESTS/)
  t.match(result.stderr, /LOG_LEVEL/)
  t.equal(result.stderr.match(/invalid configuration/g)!.length, 1)
})
