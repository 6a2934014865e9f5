// WORKERS=2: the real server.ts as a process tree (a primary that prepares the images, two workers that
// serve), checked from outside over 127.0.0.1 the way Kubernetes and clients see it.
import t from 'tap'
import { spawn } from 'node:child_process'
import http from 'node:http'
import { fileURLToPath } from 'node:url'
import { readdirSync, readFileSync } from 'node:fs'
import { availableCpus } from '../../services/process/cpus.ts'
import { freePort } from '../helper.ts'
import { startServerProcess, untilHealthy } from '../fixtures/server-process.ts'
import { warmCompileCache } from '../../deploy/warm-compile-cache.ts'

const SERVER = fileURLToPath(new URL('../../server.ts', import.meta.url))
const ID = '6f7d5b1e-4a2c-4e8b-9d3f-0a1b2c3d4e5f'
const VERSION = '9.6.20250101-0'

t.test('two workers: readiness, aggregated metrics, shared short links, SIGTERM drains the workers', async t => {
  const port = await freePort()
  const dir = t.testdir()
  const server = startServerProcess(t, port, { WORKERS: '2', DATA_DIR: `${dir}/data`, LOG_LEVEL: 'warn', MAX_EVENT_LOOP_DELAY_MS: '0' }, dir)
  const { base, child, output, exited } = server
  const health = await untilHealthy(server, 15_000, 100)
  t.equal(health, 200, `ready behind two workers${health === 200 ? '' : `; output:\n${output().slice(-2000)}`}`)

  for (let i = 0; i < 9; i++) t.equal((await fetch(`${base}/health`, { headers: { connection: 'close' } })).status, 200)
  const metrics = await (await fetch(`${base}/metrics`, { headers: { connection: 'close' } })).text()
  const count = Number(/assisted_image_service_http_request_duration_seconds_count\{service="",handler="\/health",method="GET",code="200"\} (\d+)/.exec(metrics)?.[1])
  t.ok(count >= 10, `/metrics counts the /health requests of both workers (${count})`)
  t.match(metrics, /^assisted_image_service_os_images_ready 1$/m, 'a per-image gauge is not multiplied by the workers')
  t.match(metrics, /^assisted_image_service_os_image_download_bytes_total \d+$/m, 'the primary\'s download counters are there once')

  const iso = `${base}/byid/${ID}/${VERSION}/x86_64/full.iso`
  const head = await fetch(iso, { method: 'HEAD', headers: { connection: 'close' } })
  const link = /^<http:\/\/localhost:\d+(\/s\/[^>]+)>/.exec(head.headers.get('link') ?? '')?.[1]
  t.ok(link, 'a short link')
  const etags = new Set<string>()
  for (let i = 0; i < 6; i++) {
    const res = await fetch(`${base}${link}`, { method: 'HEAD', headers: { connection: 'close' } })
    t.equal(res.status, 200, 'the short link resolves whichever worker answers')
    etags.add(res.headers.get('etag') ?? '')
  }
  t.same([...etags], [head.headers.get('etag')], 'one ETag from every worker')

  // A worker that dies is replaced.
  const children = (): number[] => readdirSync('/proc').filter(n => /^\d+$/.test(n)).filter(n => {
    try { return readFileSync(`/proc/${n}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1] === String(child.pid) } catch { return false }
  }).map(Number)
  const before = children()
  t.equal(before.length, 2, 'two worker processes')
  process.kill(before[0]!, 'SIGKILL')
  let after: number[] = []
  for (let i = 0; i < 100; i++) {
    after = children()
    if (after.length === 2 && !after.includes(before[0]!)) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.ok(after.length === 2 && !after.includes(before[0]!), `a killed worker is replaced (${before.join(',')} -> ${after.join(',')})`)
  for (let i = 0; i < 50; i++) {
    if ((await fetch(`${base}/health`, { headers: { connection: 'close' } })).status === 200 && (await fetch(`${base}${link}`, { method: 'HEAD', headers: { connection: 'close' } })).status === 200) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.equal((await fetch(`${base}${link}`, { method: 'HEAD', headers: { connection: 'close' } })).status, 200, 'and the new one serves')

  // SIGTERM while a full ISO is streaming: the response completes, then everything exits 0.
  const body = await new Promise<{ length: number, expected: number }>((resolve, reject) => {
    http.get(iso, { agent: false }, res => {
      let length = 0
      let signalled = false
      res.on('data', (chunk: Buffer) => {
        length += chunk.length
        if (!signalled) { signalled = true; child.kill('SIGTERM') }
      })
      res.on('end', () => resolve({ length, expected: Number(res.headers['content-length']) }))
      res.on('error', reject)
    }).on('error', reject)
  })
  t.equal(body.length, body.expected, `the in-flight ISO completed (${body.length} bytes)`)
  t.equal(await exited, 0, 'the primary exits 0 after its workers')
  t.equal(output().match(/"level":50/g)?.length ?? 0, 1, 'one error logged: the worker that was killed')
})

t.test('WORKERS defaults to the CPUs this process may use, honouring a cgroup quota', async t => {
  const dir = t.testdir({ 'cpu.max': '150000 100000\n', unlimited: 'max 100000\n' })
  t.equal(availableCpus(`${dir}/cpu.max`), Math.min(2, availableCpus(`${dir}/unlimited`)), '1.5 CPUs of quota: 2 workers at most')
  t.ok(availableCpus(`${dir}/missing`) >= 1)
})

t.test('the compile cache: filled once, then every worker loads its modules from it and the primary no HTTP stack', async t => {
  const dir = t.testdir()
  const cache = `${dir}/compile-cache`
  await warmCompileCache(cache)
  t.ok(readdirSync(cache).some(version => readdirSync(`${cache}/${version}`).length > 100), 'the cache holds the compiled modules')

  const port = await freePort()
  const child = spawn(process.execPath, [SERVER], {
    cwd: dir,
    env: { PATH: process.env.PATH, WORKERS: '2', LISTEN_PORT: String(port), DATA_DIR: `${dir}/data`, LOG_LEVEL: 'warn', NODE_COMPILE_CACHE: cache, NODE_DEBUG_NATIVE: 'COMPILE_CACHE' },
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let debug = ''
  child.stderr.on('data', (d: Buffer) => { debug += d.toString() })
  const exited = new Promise(resolve => child.once('exit', resolve))
  t.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL') })
  let status: number | undefined
  for (let i = 0; i < 150 && status !== 200; i++) {
    status = await fetch(`http://127.0.0.1:${port}/health`).then(r => r.status, () => undefined)
    if (status !== 200) await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.equal(status, 200, 'ready')
  // Ready means one worker serves; the second may still be starting.
  const app = new URL('../../app.ts', import.meta.url).href
  const hits = (): number => debug.split('\n').filter(l => l.includes(`transpile cache for StrippedTypeScript ${app}...success`)).length
  // Up to 30 s: on a CI machine the suite's other job may be booting QEMU guests on the same two cores.
  for (let i = 0; i < 300 && hits() < 2; i++) await new Promise(resolve => setTimeout(resolve, 100))
  child.kill('SIGTERM')
  await exited
  t.equal(hits(), 2, 'app.ts comes stripped from the cache, once per worker and never in the primary')
})
