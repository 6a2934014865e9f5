// Faults an operator meets: clients that stop reading, an assisted-service that misbehaves, a link store
// that cannot be written. Real HTTP on 127.0.0.1; every wait is bounded.
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { largeBuffersInUse } from '../../services/compose/read-buffers.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'
import { listen } from '../helper.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')
const isos = await routeIsos(t.testdir())
const fullIso = (id = ID) => `/byid/${id}/${X86_VERSION}/x86_64/full.iso`
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

t.test('row 5: clients that stop reading are cut off after SEND_IDLE_TIMEOUT; their slots and buffers come back', async t => {
  const { url } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION } }, listen: true, env: { SEND_IDLE_TIMEOUT: '1', MAX_CONCURRENT_REQUESTS: '3', REQUEST_QUEUE_TIMEOUT: '3' } })
  const port = Number(new URL(url!).port)
  const stalled: net.Socket[] = []
  for (let i = 0; i < 4; i++) {
    const socket = net.connect(port, '127.0.0.1')
    socket.on('error', () => {})
    socket.write(`GET ${fullIso()} HTTP/1.1\r\nHost: x\r\n\r\n`)
    socket.pause() // never reads: the server's writes stall once the socket buffers are full
    stalled.push(socket)
  }
  t.teardown(() => { for (const s of stalled) s.destroy() })
  await sleep(300)
  const started = Date.now()
  const res = await fetch(`${url}${fullIso()}`, { method: 'HEAD', signal: AbortSignal.timeout(8000) })
  t.equal(res.status, 200, 'a new request is served: the stalled ones gave their slots back')
  t.ok(Date.now() - started < 3000, `within ${Date.now() - started} ms, before the queue timeout`)
  t.ok(stalled.every(s => !s.destroyed), 'the stalled clients never closed their side')
  await sleep(2000) // the fourth stalled client got a slot when the others left; it is cut off in turn
  const metrics = await (await fetch(`${url}/metrics`)).text()
  const evicted = Number(/assisted_image_service_responses_idle_timeout_total (\d+)/.exec(metrics)?.[1])
  t.ok(evicted >= 4, `${evicted} responses cut off and counted`)
  t.equal(largeBuffersInUse(), 0, 'every shared read buffer was returned')
  t.match(metrics, /^assisted_image_service_limited_requests_active 0$/m, 'no slot is held any more')
})

const FAULT_NAMES = ['never', 'slow', 'huge', 'declared-huge', 'invalid-json', 'too-large-for-area']
/** Image id -> the fault its calls meet. */
const FAULTS = new Map(FAULT_NAMES.map((name, i) => [`00000000-0000-4000-8000-00000000000${i}`, name]))
const faultId = (name: string): string => [...FAULTS].find(([, n]) => n === name)![0]

/** An assisted-service that misbehaves in one way per infra-env id. */
async function faultyUpstream (t: Test) {
  const server = http.createServer((req, res) => {
    res.on('error', () => {})
    const id = FAULTS.get(/infra-envs\/([^/?]+)/.exec(req.url ?? '')?.[1] ?? '') ?? ''
    const isIgnition = req.url!.includes('/downloads/files')
    const isInfraEnv = !req.url!.includes('/downloads/')
    if (isInfraEnv) {
      if (id === 'invalid-json') { res.writeHead(200, { 'content-type': 'application/json' }).end('{"kernel_arguments": [not json'); return }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"kernel_arguments": null}')
      return
    }
    if (!isIgnition) { res.writeHead(204).end(); return }
    switch (id) {
      case 'never': return // keeps the connection open, says nothing
      case 'slow': {
        res.writeHead(200)
        const timer = setInterval(() => res.write('{'), 1000)
        res.on('close', () => clearInterval(timer))
        return
      }
      case 'huge': {
        // 5 GiB of zeros, streamed with no Content-Length, as fast as the client reads.
        res.writeHead(200)
        const chunk = Buffer.alloc(1 << 20)
        let sent = 0
        const pump = (): void => {
          while (sent < 5 * 1024 && res.write(chunk)) sent++
          if (sent >= 5 * 1024) res.end()
        }
        res.on('drain', pump)
        pump()
        return
      }
      case 'declared-huge': res.writeHead(200, { 'content-length': String(5 * 2 ** 30) }).write(Buffer.alloc(1024)); return
      case 'too-large-for-area': res.writeHead(200).end(Buffer.from(JSON.stringify({ ignition: { version: '3.2.0' }, pad: randomBytes(400_000).toString('base64') }))); return
      default: res.writeHead(200).end(IGNITION)
    }
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  return `127.0.0.1:${(server.address() as AddressInfo).port}`
}

t.test('row 6 and upstream faults: each answered in bounded time with a clear status, memory bounded', async t => {
  const host = await faultyUpstream(t)
  const env = {
    OS_IMAGES: JSON.stringify([{ openshift_version: '4.18', cpu_architecture: 'x86_64', url: `file://${isos.x86}`, version: X86_VERSION }]),
    ASSISTED_SERVICE_HOST: host,
    ASSISTED_SERVICE_TIMEOUT: '2',
    UPSTREAM_CACHE_TTL: '0'
  }
  const { url, fastify } = await listen(t, env)
  await fastify.imageStore.settled()
  const rssBefore = process.memoryUsage().rss
  const expectations: Array<[string, number, RegExp]> = [
    ['huge', 502, /UPSTREAM_TOO_LARGE/],
    ['declared-huge', 502, /UPSTREAM_TOO_LARGE/],
    ['never', 504, /UPSTREAM_TIMEOUT/],
    ['slow', 504, /UPSTREAM_TIMEOUT/],
    ['invalid-json', 502, /UPSTREAM_BAD_ANSWER/],
    ['too-large-for-area', 500, /IMG_EMBED_AREA_TOO_SMALL.*does not fit/]
  ]
  let peak = rssBefore
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss) }, 20)
  for (const [id, status, body] of expectations) {
    const started = Date.now()
    const res = await fetch(`${url}/byid/${faultId(id)}/${X86_VERSION}/x86_64/full.iso`, { signal: AbortSignal.timeout(10_000) })
    t.equal(res.status, status, `${id}: ${status}`)
    t.match(status === 200 ? '' : await res.text(), body)
    t.ok(Date.now() - started < 8000, `${id}: answered in ${Date.now() - started} ms`)
  }
  clearInterval(sampler)
  t.ok(peak - rssBefore < 200 << 20, `RSS grew by ${Math.round((peak - rssBefore) / 2 ** 20)} MiB at most while upstream sent 5 GiB`)
})

t.test('row 7: a short-link store that cannot be written never fails an ISO, and recovers', async t => {
  const dataDir = join(t.testdir(), 'data')
  const { app } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: IGNITION } }, env: { DATA_DIR: dataDir } })
  mkdirSync(dataDir, { recursive: true })
  writeFileSync(join(dataDir, 'short-links'), 'a file where the link store should be')
  const broken = await app.inject(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso`)
  t.equal(broken.statusCode, 200, 'the ISO is served')
  t.equal(broken.headers.link, undefined, 'without a Link header')
  t.same(readdirSync(dataDir).filter(n => n.includes('.tmp')), [], 'no temporary file is left')
  const again = await app.inject(`/byid/${ID}/${X86_VERSION}/x86_64/minimal.iso`)
  t.equal(again.statusCode, 200)
  t.match((await app.inject('/metrics')).body, /assisted_image_service_short_link_store_failures_total 2/)
  rmSync(join(dataDir, 'short-links'))
  const recovered = await app.inject(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso`)
  t.match(recovered.headers.link, /^<[^>]+\/s\/[A-Za-z0-9_-]{22}\/full\.iso>; rel="alternate"$/, 'the next write works again')
  t.ok(existsSync(join(dataDir, 'short-links', 'secret')))
})
