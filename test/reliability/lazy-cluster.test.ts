// Images on demand across processes: two workers reading the primary's block cache, and three replicas behind the
// nginx slice cache of deploy/origin-cache/, against a real nginx origin. Everything on 127.0.0.1; waits bounded.
import t, { type Test } from 'tap'
import { copyFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { startFakeAssisted } from '../fixtures/fake-assisted.ts'
import { startNginxOrigin, type NginxOrigin } from '../fixtures/nginx-origin.ts'
import { startServerProcess, untilHealthy } from '../fixtures/server-process.ts'
import { routeIsos, X86_VERSION } from '../fixtures/service.ts'
import { missingTools } from '../fixtures/tools.ts'
import { freePort } from '../helper.ts'

const ID = '7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f'
const RANGE = 256 << 10
const skip = missingTools('nginx') || false

async function originWithIso (t: Test): Promise<{ origin: NginxOrigin, dir: string, upstreamHost: string }> {
  const dir = t.testdir()
  const isos = await routeIsos(join(dir, 'isos'))
  mkdirSync(join(dir, 'www'))
  copyFileSync(isos.x86, join(dir, 'www', 'rhcos.iso'))
  const origin = await startNginxOrigin(t, { root: join(dir, 'www') })
  const upstream = await startFakeAssisted(t, { [ID]: { ignition: Buffer.from('{"ignition":{"version":"3.2.0"}}') } })
  return { origin, dir, upstreamHost: upstream.host }
}

const osImages = (url: string) => JSON.stringify([{ openshift_version: '4.18', cpu_architecture: 'x86_64', url, version: X86_VERSION }])

/** Every 256 KiB range of `paths` (one per base, round robin), shuffled, on new connections; the bytes in order. */
async function bmcRead (bases: string[], path: string): Promise<Buffer> {
  const head = await fetch(`${bases[0]}${path}`, { method: 'HEAD', headers: { connection: 'close' } })
  const size = Number(head.headers.get('content-length'))
  const starts = Array.from({ length: Math.ceil(size / RANGE) }, (_, i) => i * RANGE).sort(() => Math.random() - 0.5)
  const bytes = Buffer.alloc(size)
  for (let i = 0; i < starts.length; i += 6) {
    await Promise.all(starts.slice(i, i + 6).map(async (start, j) => {
      const end = Math.min(size, start + RANGE) - 1
      const res = await fetch(`${bases[(i + j) % bases.length]}${path}`, { headers: { range: `bytes=${start}-${end}`, connection: 'close' } })
      if (res.status !== 206) throw new Error(`range ${start}-${end}: ${res.status} ${await res.text()}`)
      Buffer.from(await res.arrayBuffer()).copy(bytes, start)
    }))
  }
  return bytes
}

/** The ranges an origin served, with how often each was asked for (the probe of the first byte left out). */
function blockFetches (origin: NginxOrigin): Map<string, number> {
  const counts = new Map<string, number>()
  for (const r of origin.accessLog()) if (r.status === 206 && r.range !== 'bytes=0-0') counts.set(r.range, (counts.get(r.range) ?? 0) + 1)
  return counts
}

t.test('two workers read the primary\'s block cache: each block from the origin once, the eager bytes', { skip }, async t => {
  const { origin, dir, upstreamHost } = await originWithIso(t)
  // One public URL for both: the minimal ISO carries the rootfs URL.
  const base = { ASSISTED_SERVICE_HOST: upstreamHost, IMAGE_SERVICE_BASE_URL: 'http://images.example:8080', OS_IMAGES: osImages(`${origin.url}/rhcos.iso`) }
  const cluster = async (name: string, fetchMode: string) => {
    const server = startServerProcess(t, await freePort(), {
      ...base, WORKERS: '2', DATA_DIR: join(dir, name), LOG_LEVEL: 'warn', MAX_EVENT_LOOP_DELAY_MS: '0', OS_IMAGES_FETCH: fetchMode
    }, dir)
    t.equal(await untilHealthy(server, 30_000, 100), 200, `${name} ready behind two workers`, { output: server.output().slice(-2000) })
    return server
  }
  const minimal = `/byid/${ID}/${X86_VERSION}/x86_64/minimal.iso`
  const eager = await cluster('eager', 'eager')
  const reference = Buffer.from(await (await fetch(`${eager.base}${minimal}`, { headers: { connection: 'close' } })).arrayBuffer())
  const before = origin.accessLog().length
  const server = await cluster('on-demand', 'on-demand')
  const bytes = await bmcRead([server.base], minimal)
  t.ok(bytes.equals(reference), 'a BMC read across both workers gives the eager instance\'s bytes')
  const counts = [...blockFetches(origin).entries()].filter(([range]) => origin.accessLog().slice(before).some(r => r.range === range))
  const twice = counts.filter(([, n]) => n > 1)
  t.ok(counts.length > 0, `${counts.length} blocks fetched`)
  t.same(twice, [], 'no block fetched from the origin twice, whichever worker asked')
  const metrics = await (await fetch(`${server.base}/metrics`, { headers: { connection: 'close' } })).text()
  t.match(metrics, /^assisted_image_service_os_image_origin_bytes_total [1-9]\d*$/m, 'the primary counts what it fetched')
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0, 'SIGTERM drains and exits')
})

t.test('three replicas behind the nginx slice cache: the origin serves each block once', { skip }, async t => {
  const { origin, dir, upstreamHost } = await originWithIso(t)
  const proxy = await startNginxOrigin(t, { proxyTo: origin.url })
  const bases: string[] = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort()
    const server = startServerProcess(t, port, {
      WORKERS: '1',
      DATA_DIR: join(dir, `replica-${i}`),
      LOG_LEVEL: 'warn',
      MAX_EVENT_LOOP_DELAY_MS: '0',
      OS_IMAGES_FETCH: 'on-demand',
      OS_IMAGES: osImages(`${proxy.url}/rhcos.iso`),
      ASSISTED_SERVICE_HOST: upstreamHost
    }, dir)
    t.equal(await untilHealthy(server, 30_000, 100), 200, `replica ${i} ready`)
    bases.push(server.base)
  }
  const path = `/boot-artifacts/rootfs?version=${X86_VERSION}&arch=x86_64`
  const reads = await Promise.all(bases.map(async base => Buffer.from(await (await fetch(`${base}${path}`, { headers: { connection: 'close' } })).arrayBuffer())))
  t.ok(reads[0]!.length > 8 << 20, `a rootfs of ${reads[0]!.length} bytes`)
  t.ok(reads.every(r => r.equals(reads[0]!)), 'every replica serves the same rootfs')
  const minimal = await bmcRead(bases, `/byid/${ID}/${X86_VERSION}/x86_64/minimal.iso`)
  t.ok(minimal.length > 0, 'a BMC read spread over the three replicas completes')
  const counts = blockFetches(origin)
  t.ok(counts.size > 8, `the origin served ${counts.size} slices`)
  t.same([...counts.entries()].filter(([, n]) => n > 1), [], 'each one once, for three replicas')
})
