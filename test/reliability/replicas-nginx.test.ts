// Three service processes behind a real nginx (round robin, proxy_cache on /boot-artifacts/), sharing short
// links through a real Redis, or through one DATA_DIR. Everything on 127.0.0.1; every wait is bounded.
import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { routeIsos, X86_VERSION } from '../fixtures/service.ts'
import { missingTools } from '../fixtures/tools.ts'
import { freePort } from '../helper.ts'
import { stopTree } from '../fixtures/process-tree.ts'

const SERVER = fileURLToPath(new URL('../../server.ts', import.meta.url))
const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const OTHER = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2d'
const skip = missingTools('nginx', 'redis-server') || false
const sleep = (ms: number) => new Promise(resolve => setTimeout(resolve, ms))

function start (t: Test, command: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(command, args, { env: { PATH: process.env.PATH!, ...env }, stdio: ['ignore', 'ignore', 'pipe'] })
  child.stderr!.on('data', () => {})
  // nginx's master must take its workers and cache manager with it: SIGKILL to it alone left them behind.
  t.teardown(() => stopTree(child, 'SIGTERM', 5_000))
  return child
}

async function until (what: string, check: () => Promise<boolean>): Promise<void> {
  // 60 s: three replicas start while the suite's other job may be booting QEMU guests on the same two cores.
  for (let i = 0; i < 600; i++) {
    if (await check().catch(() => false)) return
    await sleep(100)
  }
  throw new Error(`${what}: not within 60 s`)
}

/** A cluster of three replicas behind nginx; `env` picks the short-link store. */
async function replicas (t: Test, env: (i: number) => Record<string, string>) {
  const dir = t.testdir()
  const isos = await routeIsos(join(dir, 'isos'))
  mkdirSync(join(dir, 'envs', ID), { recursive: true })
  mkdirSync(join(dir, 'envs', OTHER), { recursive: true })
  for (const id of [ID, OTHER]) writeFileSync(join(dir, 'envs', id, 'discovery.ign'), '{"ignition":{"version":"3.2.0"}}')
  const nginxPort = await freePort()
  const ports: number[] = []
  for (let i = 0; i < 3; i++) {
    const port = await freePort()
    ports.push(port)
    start(t, process.execPath, [SERVER], {
      WORKERS: '1',
      LISTEN_PORT: String(port),
      LOG_LEVEL: 'warn',
      INFRAENVS_DIR: join(dir, 'envs'),
      MAX_EVENT_LOOP_DELAY_MS: '0',
      IMAGE_SERVICE_BASE_URL: `http://127.0.0.1:${nginxPort}`,
      OS_IMAGES: JSON.stringify([{ openshift_version: '4.17', cpu_architecture: 'x86_64', url: `file://${isos.x86}`, version: X86_VERSION }]),
      ...env(i)
    })
  }
  for (const port of ports) await until(`replica ${port}`, async () => (await fetch(`http://127.0.0.1:${port}/health`)).status === 200)
  mkdirSync(join(dir, 'nginx', 'cache'), { recursive: true })
  // As root, nginx's workers would drop to "nobody", who cannot reach a checkout under a private (0700) directory.
  const user = process.getuid?.() === 0 ? 'user root;' : ''
  writeFileSync(join(dir, 'nginx', 'nginx.conf'), `${user} daemon off; worker_processes 1; pid ${dir}/nginx/pid; error_log ${dir}/nginx/error.log;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/nginx; proxy_temp_path ${dir}/nginx; fastcgi_temp_path ${dir}/nginx; uwsgi_temp_path ${dir}/nginx; scgi_temp_path ${dir}/nginx;
  proxy_cache_path ${dir}/nginx/cache keys_zone=artifacts:1m max_size=1g inactive=1h use_temp_path=off;
  upstream replicas { ${ports.map(p => `server 127.0.0.1:${p};`).join(' ')} }
  server {
    listen 127.0.0.1:${nginxPort};
    location /boot-artifacts/ { proxy_pass http://replicas; proxy_cache artifacts; add_header X-Cache-Status $upstream_cache_status; }
    location / { proxy_pass http://replicas; proxy_buffering off; add_header X-Upstream $upstream_addr; }
  }
}
`)
  start(t, 'nginx', ['-c', join(dir, 'nginx', 'nginx.conf'), '-p', join(dir, 'nginx')])
  const base = `http://127.0.0.1:${nginxPort}`
  await until('nginx', async () => (await fetch(`${base}/live`)).status === 200)
  return { base, ports, dir }
}

async function artifactRequests (ports: number[]): Promise<number> {
  let total = 0
  for (const port of ports) {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    for (const m of text.matchAll(/http_request_duration_seconds_count\{service="",handler="\/boot-artifacts\/[^"]+",method="GET"[^}]*\} (\d+)/g)) total += Number(m[1])
  }
  return total
}

async function checkCluster (t: Test, base: string, ports: number[]): Promise<string> {
  const iso = `${base}/byid/${ID}/${X86_VERSION}/x86_64/full.iso`
  const heads = []
  for (let i = 0; i < 6; i++) heads.push(await fetch(iso, { method: 'HEAD' }))
  t.equal(new Set(heads.map(h => h.headers.get('x-upstream'))).size, 3, 'nginx spread the requests over the three replicas')
  for (const header of ['etag', 'last-modified', 'content-length', 'link']) {
    t.equal(new Set(heads.map(h => h.headers.get(header))).size, 1, `${header}: identical from every replica`)
  }
  const link = /^<([^>]+)>/.exec(heads[0]!.headers.get('link') ?? '')?.[1]
  t.ok(link, 'a short link')
  const reference = Buffer.from(await (await fetch(iso, { headers: { range: 'bytes=32768-98303' } })).arrayBuffer())
  for (let i = 0; i < 3; i++) {
    const res = await fetch(link!, { headers: { range: 'bytes=32768-98303' } })
    t.equal(res.status, 206)
    t.ok(Buffer.from(await res.arrayBuffer()).equals(reference), `the short link serves identical bytes through replica ${res.headers.get('x-upstream')}`)
  }
  const etag = heads[0]!.headers.get('etag')!
  const other = await fetch(`http://127.0.0.1:${ports[2]}/byid/${ID}/${X86_VERSION}/x86_64/full.iso`, { headers: { range: 'bytes=0-99', 'if-range': etag } })
  t.equal(other.status, 206, 'If-Range with one replica\'s ETag gets 206 from another')
  await other.arrayBuffer()

  const rootfs = `${base}/boot-artifacts/rootfs?version=${X86_VERSION}&arch=x86_64`
  const first = await fetch(rootfs)
  const firstBytes = Buffer.from(await first.arrayBuffer())
  const before = await artifactRequests(ports)
  const second = await fetch(rootfs)
  const secondBytes = Buffer.from(await second.arrayBuffer())
  t.equal(second.headers.get('x-cache-status'), 'HIT', 'the second rootfs fetch is nginx\'s cache hit')
  t.equal(await artifactRequests(ports), before, 'and reached no replica')
  t.ok(secondBytes.equals(firstBytes), `same ${secondBytes.length} bytes`)
  return iso
}

t.test('three replicas, short links in Redis, behind nginx', { skip }, async t => {
  const redisPort = await freePort()
  const redis = start(t, 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'])
  const { base, ports } = await replicas(t, () => ({ REDIS_URL: `redis://127.0.0.1:${redisPort}` }))
  await checkCluster(t, base, ports)
  redis.kill('SIGKILL')
  await new Promise(resolve => redis.once('exit', resolve))
  const res = await fetch(`${base}/byid/${OTHER}/${X86_VERSION}/x86_64/full.iso`, { method: 'HEAD' })
  t.equal(res.status, 200, 'with Redis stopped ISOs are still served')
  t.equal(res.headers.get('link'), null, 'without a Link header')
})

t.test('three replicas sharing one DATA_DIR (embedded link store), behind nginx', { skip }, async t => {
  const shared = join(t.testdirName, 'shared-data')
  const { base, ports } = await replicas(t, () => ({ DATA_DIR: shared }))
  await checkCluster(t, base, ports)
})
