// OS images on demand (OS_IMAGES_FETCH=lazy / on-demand) against the anchors of the same run: eager start-up (every
// image downloaded whole first) and curl straight from the origin. The origin is a real nginx on 127.0.0.1 with
// limit_rate per connection, sendfile and its default strong ETags, run from a temporary directory; the service is
// server.ts as a process with its default process set (WORKERS=2). Sizes for quick runs: LAZY_BENCH_IMAGE_MIB (1024:
// the rootfs, at least 100, which the service requires), LAZY_BENCH_IMAGES (47: figure 2's image count; figure 1
// configures at most 4), LAZY_BENCH_RATE (nginx's limit_rate, 100m). Every wait is bounded; nginx (master and workers),
// the services and the temporary directory are gone at the end.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import {
  closeSync, existsSync, ftruncateSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync,
  rmSync, statSync, utimesSync, writeFileSync, writeSync
} from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buildSyntheticIso, writeSparseRootfs } from '../services/coreos/synthetic-iso.ts'
import { IsoImage } from '../services/iso9660/reader.ts'
import { warmCompileCache } from '../deploy/warm-compile-cache.ts'
import { CACHE, freePort, has, line, ratio, ROOT, startProcess } from './lib.ts'
import { childrenOf, hasExited, portAnswers, stopTree } from '../test/fixtures/process-tree.ts'

const MIB = 2 ** 20
const ARCH = 'x86_64'
const INFRA_ENV = '5f0c9a1e-8d3b-4e7f-a2c6-1b9d0e4f7a3c'
/** Figure 1's image count (fewer when LAZY_BENCH_IMAGES is smaller). */
const FEW = 4
/** How long an eager start-up may take: figure 2 is capped as its target says; figure 1 is bounded too. */
const EAGER_CAP_MANY_MS = 120_000
const EAGER_CAP_FEW_MS = 600_000
const LAZY_CAP_MS = 120_000
const IDLE_MS = 5_000
const BMC_RANGE = 256 << 10
const BMC_PARALLEL = 4
/** What the store refuses under (services/store/validate.ts). */
const MIN_ROOTFS_MIB = 100
const DEPLOYMENT = 'ostree/deploy/rhcos/deploy/0123456789abcdef.0'
const NMSTATECTL_BYTES = 10 << 20

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))
const mib = (bytes: number): string => `${(bytes / MIB).toFixed(bytes < 10 * MIB ? 1 : 0)} MiB`
const size = (bytes: number): string => bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : mib(bytes)
const secs = (ms: number): string => `${(ms / 1000).toFixed(2)} s`
const mbps = (bytesPerSecond: number): string => `${(bytesPerSecond / 1e6).toFixed(0)} MB/s`
const pct = (part: number, whole: number): string => `${(100 * part / whole).toFixed(2)}%`
const version = (i: number): string => `9.6.20250101-${i}`
const originFile = (i: number): string => `rhcos-${version(i)}-live.${ARCH}.iso`

function positiveInt (name: string, fallback: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const n = Number(raw)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`${name}: a positive integer, not "${raw}"`)
  return n
}

/** What DATA_DIR holds: in all, in block caches (`….iso.blocks`), in nmstatectl binaries and archives. */
interface Disk { total: number, blocks: number, nmstate: number }

function dataDirUsage (dir: string): Disk {
  const disk: Disk = { total: diskUsage(dir), blocks: 0, nmstate: 0 }
  for (const name of readdirSync(dir)) {
    if (name.endsWith('.iso.blocks')) disk.blocks += diskUsage(join(dir, name))
    else if (name.startsWith('nmstatectl-')) disk.nmstate += diskUsage(join(dir, name))
  }
  return disk
}

/** `du`-style: the blocks allocated under `path` (st_blocks * 512), a sparse file counting only what it holds. */
function diskUsage (path: string): number {
  let st
  try { st = lstatSync(path) } catch { return 0 }
  let total = st.blocks * 512
  if (st.isDirectory()) for (const name of readdirSync(path)) total += diskUsage(join(path, name))
  return total
}

/** Every process this section started, for a Ctrl-C. */
const started = new Set<ChildProcess>()

function killAllNow (): void {
  for (const child of started) {
    if (hasExited(child)) continue
    for (const pid of childrenOf(child.pid!)) try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
    child.kill('SIGKILL')
  }
}

// ---- the origin: nginx (the parts of test/fixtures/nginx-origin.ts this needs) ----

interface OriginRequest { uri: string, status: number, range: string, bytes: number, timeMs: number }

interface Origin {
  url: string
  accessLog: () => OriginRequest[]
  stop: () => Promise<void>
}

async function startOrigin (dir: string, root: string, rate: string): Promise<Origin> {
  mkdirSync(dir, { recursive: true })
  const port = await freePort()
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map(kind => `${kind}_temp_path ${dir}/${kind}_temp;`).join('\n  ')
  // As root, nginx's workers would drop to "nobody", who may not reach the temporary directory.
  writeFileSync(join(dir, 'nginx.conf'), `${process.getuid?.() === 0 ? 'user root;\n' : ''}master_process on;
worker_processes 2;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
events { worker_connections 1024; }
http {
  default_type application/octet-stream;
  ${temp}
  log_format origin escape=json '{"uri":"$uri","status":$status,"range":"$http_range","bytes":$body_bytes_sent,"time":$msec}';
  access_log ${dir}/access.log origin;
  sendfile on;
  server {
    # limit_rate delays a response only once the socket's buffer is full: loopback's is megabytes, so without a small
    # send buffer 1 MiB ranges would escape the rate that a whole-file download keeps.
    listen 127.0.0.1:${port} sndbuf=64k;
    root ${root};
    limit_rate ${rate};
  }
}
`)
  const child = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] })
  started.add(child)
  let stderr = ''
  child.stderr!.setEncoding('utf8').on('data', (text: string) => { stderr = (stderr + text).slice(-2_000) })
  const spawnError = await new Promise<Error | undefined>(resolve => child.once('spawn', () => resolve(undefined)).once('error', resolve))
  if (spawnError !== undefined) throw spawnError
  const pidFile = join(dir, 'nginx.pid')
  const deadline = Date.now() + 10_000
  // nginx writes its pid file once it holds its sockets: before that, the port may answer for another process.
  while (!existsSync(pidFile) || Number(readFileSync(pidFile, 'utf8').trim()) !== child.pid || !await portAnswers(port)) {
    if (hasExited(child) || Date.now() > deadline) {
      await stopTree(child, 'SIGTERM', 5_000)
      throw new Error(`nginx did not start: ${stderr}${existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8').slice(-2_000) : ''}`)
    }
    await sleep(50)
  }
  return {
    url: `http://127.0.0.1:${port}`,
    accessLog: () => {
      const file = join(dir, 'access.log')
      if (!existsSync(file)) return []
      return readFileSync(file, 'utf8').split('\n').filter(l => l !== '').map(l => {
        const e = JSON.parse(l) as { uri: string, status: number, range: string, bytes: number, time: number }
        return { uri: e.uri, status: e.status, range: e.range, bytes: e.bytes, timeMs: e.time * 1000 }
      })
    },
    // SIGTERM is nginx's fast shutdown (SIGQUIT would wait for slow transfers to finish).
    stop: async () => await stopTree(child, 'SIGTERM', 5_000)
  }
}

/**
 * A CoreOS-layout ISO as the service expects one (services/coreos/synthetic-iso.ts, as the route tests build theirs),
 * cached in bench/.cache: a `rootfsMiB` rootfs.img whose root filesystem is a real squashfs (zstd, as RHCOS ships it)
 * holding a 10 MiB nmstatectl in an ostree deployment, so that preparation reads nmstatectl's blocks as it does for a
 * real image. The rest of the rootfs, and the 12 MiB placeholder kernel, are zeros (sparse on disk).
 */
async function lazyIso (rootfsMiB: number): Promise<string> {
  const dir = `${CACHE}lazy-iso-${rootfsMiB}`
  const volumeId = 'rhcos-9.6.20250101-0'
  const iso = `${dir}/${volumeId}-${ARCH}.iso`
  if (existsSync(iso)) return iso
  rmSync(dir, { recursive: true, force: true })
  const tree = `${dir}/tree`
  mkdirSync(join(tree, DEPLOYMENT, 'usr/bin'), { recursive: true })
  mkdirSync(join(tree, DEPLOYMENT, 'usr/lib'), { recursive: true })
  // As bench/nmstate.ts's: an ELF header, then half text-like, half random bytes.
  const half = NMSTATECTL_BYTES / 2
  writeFileSync(join(tree, DEPLOYMENT, 'usr/bin/nmstatectl'),
    Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.alloc(half - 8, 'nmstate '), randomBytes(half)]), { mode: 0o755 })
  for (let i = 0; i < 64; i++) writeFileSync(join(tree, DEPLOYMENT, 'usr/lib', `lib-${i}.so`), randomBytes(16 << 10))
  const squashfs = `${dir}/root.squashfs`
  const made = spawnSync('mksquashfs', [tree, squashfs, '-comp', 'zstd', '-noappend', '-no-progress', '-quiet'], { stdio: 'ignore', timeout: 120_000 })
  if (made.status !== 0) throw new Error('mksquashfs failed')
  writeSparseRootfs(`${dir}/rootfs.img`, rootfsMiB * MIB, readFileSync(squashfs))
  rmSync(tree, { recursive: true, force: true })
  rmSync(squashfs)
  return await buildSyntheticIso({ dir, volumeId, rootfsFile: `${dir}/rootfs.img`, kernelSize: 12 << 20 })
}

/**
 * The origin's copies of the ISO: one file per version, each its own inode with its own mtime, so nginx gives each its
 * own ETag (hard links would share one and name every image's content alike). Sparse as the ISO is: only its non-zero
 * MiBs are written, so 47 copies of a 1 GiB ISO take some 10 MiB each on disk.
 */
function originCopies (iso: string, root: string, count: number): void {
  const total = statSync(iso).size
  const source = openSync(iso, 'r')
  const buffer = Buffer.alloc(MIB)
  const zeros = Buffer.alloc(MIB)
  const chunks: Array<{ offset: number, length: number }> = []
  for (let offset = 0; offset < total; offset += MIB) {
    const length = readSync(source, buffer, 0, Math.min(MIB, total - offset), offset)
    if (buffer.compare(zeros, 0, length, 0, length) !== 0) chunks.push({ offset, length })
  }
  const mtime = Math.floor(Date.now() / 1000) - 86_400
  for (let i = 0; i < count; i++) {
    const target = openSync(join(root, originFile(i)), 'w')
    try {
      for (const { offset, length } of chunks) {
        readSync(source, buffer, 0, length, offset)
        writeSync(target, buffer, 0, length, offset)
      }
      ftruncateSync(target, total)
    } finally {
      closeSync(target)
    }
    utimesSync(join(root, originFile(i)), mtime - i, mtime - i)
  }
  closeSync(source)
}

// ---- the service ----

interface Service {
  child: ChildProcess
  base: string
  dataDir: string
  startedAt: number
  output: () => string
}

/** What every service of the run shares: the temporary directory, the origin and Node's compile cache. */
interface Setup { work: string, originUrl: string, compileCache: string }

async function startService ({ work, originUrl, compileCache }: Setup, name: string, images: number[], fetchMode: string): Promise<Service> {
  const port = await freePort()
  const dataDir = join(work, `data-${name}`)
  mkdirSync(dataDir, { recursive: true })
  const base = `http://127.0.0.1:${port}`
  const osImages = images.map(i => ({ openshift_version: '4.18', cpu_architecture: ARCH, url: `${originUrl}/${originFile(i)}`, version: version(i) }))
  const startedAt = performance.now()
  // As the image runs it: the primary's young generation capped like the workers'.
  const child = startProcess(process.execPath, ['--max-semi-space-size=2', `${ROOT}server.ts`], {
    LISTEN_PORT: String(port),
    DATA_DIR: dataDir,
    WORKERS: '2',
    OS_IMAGES: JSON.stringify(osImages),
    OS_IMAGES_FETCH: fetchMode,
    INFRAENVS_DIR: join(work, 'infraenvs'),
    IMAGE_SERVICE_BASE_URL: base,
    LOG_LEVEL: 'warn',
    MAX_EVENT_LOOP_DELAY_MS: '0',
    SHUTDOWN_GRACE_PERIOD: '5',
    NODE_COMPILE_CACHE: compileCache
  })
  started.add(child)
  let output = ''
  child.stderr!.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-4_000) })
  return { child, base, dataDir, startedAt, output: () => output }
}

/**
 * Milliseconds from the process start to `/health` 200 (new connection each poll), or undefined after `capMs`. A
 * refused or degraded image fails the run: /health is 200 without it, and the figure would time less than asked.
 */
async function untilReady (service: Service, capMs: number): Promise<number | undefined> {
  for (;;) {
    const { status, body } = await fetch(`${service.base}/health`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(5_000) })
      .then(async r => ({ status: r.status, body: await r.text() }), () => ({ status: 0, body: '' }))
    const elapsed = performance.now() - service.startedAt
    if (status === 200) {
      const health = JSON.parse(body) as { refused?: unknown[], degraded?: unknown[] }
      if ((health.refused?.length ?? 0) > 0 || (health.degraded?.length ?? 0) > 0) throw new Error(`not every image serves: ${body}`)
      return elapsed
    }
    if (hasExited(service.child)) throw new Error(`the service exited (${service.child.exitCode ?? service.child.signalCode}): ${service.output()}`)
    if (elapsed > capMs) return undefined
    await sleep(20)
  }
}

async function stopService (service: Service): Promise<void> {
  // SHUTDOWN_GRACE_PERIOD=5: the primary drains its workers in that time; anything left is killed.
  await stopTree(service.child, 'SIGTERM', 15_000)
}

/** rss_anon of every process of the service, from its /metrics. */
async function privateMemory (service: Service): Promise<Map<string, number>> {
  const text = await (await fetch(`${service.base}/metrics`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(10_000) })).text()
  const byProcess = new Map<string, number>()
  for (const m of text.matchAll(/^assisted_image_service_process_memory_bytes\{([^}]*)\} (\S+)$/gm)) {
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map(l => [l[1], l[2]]))
    if (labels.kind === 'rss_anon') byProcess.set(labels.process ?? '?', Number(m[2]))
  }
  return byProcess
}

/** RssAnon of a process and its children, read from /proc (a check on the metric). */
function processRssAnon (pid: number): number {
  return [pid, ...childrenOf(pid)].reduce((sum, p) => {
    try { return sum + Number(/^RssAnon:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0) * 1024 } catch { return sum }
  }, 0)
}

const memoryText = (m: Map<string, number>): string =>
  `${mib([...m.values()].reduce((a, b) => a + b, 0))} (${[...m.entries()].map(([p, b]) => `${p} ${mib(b)}`).join(', ')})`
const memorySum = (m: Map<string, number>): number => [...m.values()].reduce((a, b) => a + b, 0)

// ---- clients ----

interface Download { status: number, bytes: number, seconds: number }

/** One curl download into /dev/null (a byte range with `range`), bounded by --max-time. */
function curl (url: string, range?: string): Promise<Download> {
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-s', '--max-time', '900', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_total}', ...(range !== undefined ? ['-r', range] : []), url])
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.on('error', reject)
    child.on('close', code => {
      const [status, bytes, seconds] = out.trim().split(' ').map(Number)
      if (code !== 0) reject(new Error(`curl ${url} exited ${code}`))
      else resolve({ status: status!, bytes: bytes!, seconds: seconds! })
    })
  })
}

function expect (what: string, d: Download, status: number, bytes?: number): void {
  if (d.status !== status || (bytes !== undefined && d.bytes !== bytes)) throw new Error(`${what}: ${d.status}, ${d.bytes} bytes (expected ${status}${bytes !== undefined ? `, ${bytes} bytes` : ''})`)
}

/** A BMC reading a virtual medium: HEAD, then every 256 KiB range once, shuffled, `parallel` at a time. */
async function bmcRead (url: string, parallel: number): Promise<{ bytes: number, ms: number }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: parallel })
  const t0 = performance.now()
  try {
    const length = await new Promise<number>((resolve, reject) => {
      const req = http.request(url, { method: 'HEAD', agent, timeout: 60_000 }, res => {
        res.resume()
        if (res.statusCode !== 200) reject(new Error(`HEAD ${url}: ${res.statusCode}`))
        else resolve(Number(res.headers['content-length']))
      })
      req.on('timeout', () => req.destroy(new Error('HEAD timed out')))
      req.on('error', reject)
      req.end()
    })
    const starts = Array.from({ length: Math.ceil(length / BMC_RANGE) }, (_, i) => i * BMC_RANGE)
    for (let i = starts.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [starts[i], starts[j]] = [starts[j]!, starts[i]!]
    }
    let bytes = 0
    let next = 0
    await Promise.all(Array.from({ length: parallel }, async () => {
      while (next < starts.length) {
        const start = starts[next++]!
        const end = Math.min(length, start + BMC_RANGE) - 1
        // Not `bytes += await`: that reads `bytes` before the wait, and the four loops would lose each other's counts.
        const got = await new Promise<number>((resolve, reject) => {
          const req = http.get(url, { agent, headers: { range: `bytes=${start}-${end}` }, timeout: 60_000 }, res => {
            let got = 0
            res.on('data', (d: Buffer) => { got += d.length })
            res.on('end', () => res.statusCode === 206 && got === end - start + 1 ? resolve(got) : reject(new Error(`range ${start}-${end}: ${res.statusCode}, ${got} bytes`)))
            res.on('error', reject)
          })
          req.on('timeout', () => req.destroy(new Error(`range ${start}-${end} timed out`)))
          req.on('error', reject)
        })
        bytes += got
      }
    }))
    return { bytes, ms: performance.now() - t0 }
  } finally {
    agent.destroy()
  }
}

// ---- the figures ----

interface StartUp { ms: number | undefined, disk: Disk, memory: number | undefined }

async function startUp (setup: Setup, name: string, count: number, fetchMode: string, capMs: number): Promise<StartUp> {
  const service = await startService(setup, name, Array.from({ length: count }, (_, i) => i), fetchMode)
  try {
    const ms = await untilReady(service, capMs)
    // At once: with lazy, the background fill starts when the images are prepared.
    const disk = dataDirUsage(service.dataDir)
    const memory = ms === undefined ? undefined : memorySum(await privateMemory(service))
    return { ms, disk, memory }
  } finally {
    await stopService(service)
    rmSync(service.dataDir, { recursive: true, force: true })
  }
}

interface StartUpFigure {
  count: number
  imageBytes: number
  lazy: StartUp
  eager: StartUp
  /** The same with on-demand: preparation without the background fill (which starts as each image is prepared). */
  onDemand?: StartUp
  eagerCapMs: number
  lazyTarget: string
  diskTarget?: string
}

const diskText = (disk: Disk, total: number): string =>
  `${size(disk.total)} (${pct(disk.total, total)}): block caches ${size(disk.blocks)}, nmstatectl + archives ${size(disk.nmstate)}`

function startUpLines (label: string, { count, imageBytes, lazy, eager, onDemand, eagerCapMs, lazyTarget, diskTarget }: StartUpFigure): void {
  const total = count * imageBytes
  line(`${label}: eager (anchor)`, eager.ms === undefined
    ? `not ready after ${(eagerCapMs / 1000).toFixed(0)} s (DATA_DIR ${size(eager.disk.total)} of ${size(total)})`
    : `${secs(eager.ms)}, DATA_DIR ${size(eager.disk.total)} (${pct(eager.disk.total, total)})`)
  const speedup = lazy.ms === undefined
    ? ''
    : eager.ms === undefined ? `(> ${(eagerCapMs / lazy.ms).toFixed(1)}x faster)` : ratio(lazy.ms, eager.ms, false).replace(')', ' faster)')
  line(`${label}: lazy (target < ${lazyTarget})`, lazy.ms === undefined ? `not ready after ${(LAZY_CAP_MS / 1000).toFixed(0)} s` : `${secs(lazy.ms)} ${speedup}`)
  line(`  DATA_DIR at ready, lazy (${diskTarget !== undefined ? `target < ${diskTarget} ` : ''}of ${size(total)})`, diskText(lazy.disk, total))
  if (onDemand !== undefined) {
    line('  the same, on-demand (no background fill): ready, DATA_DIR', onDemand.ms === undefined
      ? `not ready after ${(LAZY_CAP_MS / 1000).toFixed(0)} s`
      : `${secs(onDemand.ms)}, ${diskText(onDemand.disk, total)}`)
  }
  const memory = (s: StartUp): string => s.memory === undefined ? '-' : mib(s.memory)
  line('  rss_anon at ready, all processes', `lazy ${memory(lazy)}${onDemand !== undefined ? `, on-demand ${memory(onDemand)}` : ''}, eager ${memory(eager)}`)
}

export async function benchLazy (): Promise<void> {
  const askedMiB = positiveInt('LAZY_BENCH_IMAGE_MIB', 1024)
  const rootfsMiB = Math.max(askedMiB, MIN_ROOTFS_MIB)
  const many = positiveInt('LAZY_BENCH_IMAGES', 47)
  const few = Math.min(FEW, many)
  const rate = process.env.LAZY_BENCH_RATE ?? '100m'
  if (!/^\d+[kKmMgG]?$/.test(rate)) throw new Error(`LAZY_BENCH_RATE: an nginx limit_rate (100m, 50000k), not "${rate}"`)
  if (!has('nginx') || !has('curl') || !has('mksquashfs')) {
    process.stdout.write('OS images on demand\n')
    line('lazy', 'skipped: apt-get install nginx-light curl squashfs-tools')
    return
  }
  const nginxVersion = /nginx\/(\S+)/.exec(spawnSync('nginx', ['-v'], { encoding: 'utf8' }).stderr ?? '')?.[1] ?? '?'
  const iso = await lazyIso(rootfsMiB)
  const isoSize = statSync(iso).size
  const image = await IsoImage.open(iso)
  const extent = (path: string): { offset: number, size: number } => {
    const entry = image.lookup(path)
    if (entry === undefined || entry.extents.length !== 1) throw new Error(`${iso}: no single extent for ${path}`)
    return { offset: entry.extents[0]!.lba * 2048, size: entry.extents[0]!.size }
  }
  const pxe = { kernel: extent('/images/pxeboot/vmlinuz'), initrd: extent('/images/pxeboot/initrd.img'), rootfs: extent('/images/pxeboot/rootfs.img') }
  await image.close()
  const raised = rootfsMiB !== askedMiB ? `: LAZY_BENCH_IMAGE_MIB=${askedMiB} raised to the store's minimum` : ''
  process.stdout.write(`OS images on demand: nginx ${nginxVersion} origin on 127.0.0.1, limit_rate ${rate} per connection; ` +
    `images of ${size(isoSize)} (rootfs ${rootfsMiB} MiB${raised}, squashfs with nmstatectl); WORKERS=2; each figure next to its anchor from this run\n`)

  const work = mkdtempSync(join(tmpdir(), 'lazy-bench-'))
  const onSignal = (): void => { killAllNow(); rmSync(work, { recursive: true, force: true }); process.exit(130) }
  process.once('SIGINT', onSignal)
  let origin: Origin | undefined
  const services: Service[] = []
  try {
    const root = join(work, 'www')
    mkdirSync(root)
    originCopies(iso, root, Math.max(many, few, 3))
    mkdirSync(join(work, 'infraenvs', INFRA_ENV), { recursive: true })
    writeFileSync(join(work, 'infraenvs', INFRA_ENV, 'discovery.ign'), '{"ignition":{"version":"3.2.0"}}')
    origin = await startOrigin(join(work, 'nginx'), root, rate)
    const setup: Setup = { work, originUrl: origin.url, compileCache: `${CACHE}compile-cache` }
    await warmCompileCache(setup.compileCache)

    // 1 and 2: start to ready, lazy first, then eager (each from an empty DATA_DIR).
    const lazyFew = await startUp(setup, 'lazy-few', few, 'lazy', LAZY_CAP_MS)
    const eagerFew = await startUp(setup, 'eager-few', few, 'eager', EAGER_CAP_FEW_MS)
    startUpLines(`start to /health 200, ${few} images`, { count: few, imageBytes: isoSize, lazy: lazyFew, eager: eagerFew, eagerCapMs: EAGER_CAP_FEW_MS, lazyTarget: '5 s' })
    const lazyMany = await startUp(setup, 'lazy-many', many, 'lazy', LAZY_CAP_MS)
    const onDemandMany = await startUp(setup, 'on-demand-many', many, 'on-demand', LAZY_CAP_MS)
    const eagerMany = await startUp(setup, 'eager-many', many, 'eager', EAGER_CAP_MANY_MS)
    startUpLines(`start to /health 200, ${many} images`, {
      count: many, imageBytes: isoSize, lazy: lazyMany, eager: eagerMany, onDemand: onDemandMany, eagerCapMs: EAGER_CAP_MANY_MS, lazyTarget: '30 s', diskTarget: '3%'
    })

    // 3 to 6: one on-demand instance from an empty DATA_DIR with three images, one per figure, each cold when read.
    const instanceStart = Date.now()
    const service = await startService(setup, 'on-demand', [0, 1, 2], 'on-demand')
    services.push(service)
    if (await untilReady(service, LAZY_CAP_MS) === undefined) throw new Error(`the on-demand instance was not ready in ${LAZY_CAP_MS / 1000} s: ${service.output()}`)
    await sleep(IDLE_MS)
    const idleMemory = await privateMemory(service)

    // 3: a full ISO, cold, one client; the anchor is the same file straight from the origin.
    const direct = await curl(`${origin.url}/${originFile(0)}`)
    expect('the origin', direct, 200, isoSize)
    const full = await curl(`${service.base}/byid/${INFRA_ENV}/${version(0)}/${ARCH}/full.iso`)
    expect('full.iso', full, 200, isoSize)
    line('full ISO, 1 client, cold: curl from the origin (anchor)', `${mbps(direct.bytes / direct.seconds)} (${secs(direct.seconds * 1000)})`)
    line('full ISO, 1 client, cold: ours, on-demand (target >= 0.8x)', `${mbps(full.bytes / full.seconds)} (${secs(full.seconds * 1000)}) ${ratio(full.bytes / full.seconds, direct.bytes / direct.seconds)}`)

    // 4: a cold PXE boot's downloads, one after the other; the anchor is the same files' bytes of the ISO from the origin.
    const ranges = [pxe.kernel, pxe.initrd, pxe.rootfs].map(e => `${e.offset}-${e.offset + e.size - 1}`)
    let anchorSeconds = 0
    let anchorBytes = 0
    for (const range of ranges) {
      const d = await curl(`${origin.url}/${originFile(1)}`, range)
      expect(`the origin, range ${range}`, d, 206)
      anchorSeconds += d.seconds
      anchorBytes += d.bytes
    }
    const q = `version=${version(1)}&arch=${ARCH}`
    let pxeSeconds = 0
    let pxeBytes = 0
    for (const [what, path] of [['kernel', `/boot-artifacts/kernel?${q}`], ['pxe-initrd', `/images/${INFRA_ENV}/pxe-initrd?${q}`], ['rootfs', `/boot-artifacts/rootfs?${q}`]] as const) {
      const d = await curl(`${service.base}${path}`)
      expect(what, d, 200)
      pxeSeconds += d.seconds
      pxeBytes += d.bytes
    }
    line('PXE boot, kernel + initrd + rootfs: their ISO ranges from the origin (anchor)', `${secs(anchorSeconds * 1000)} for ${size(anchorBytes)}`)
    line('PXE boot, cold: kernel, pxe-initrd, rootfs from ours (target <= 1.25x time)', `${secs(pxeSeconds * 1000)} for ${size(pxeBytes)} ${ratio(pxeSeconds, anchorSeconds)}`)

    // 5: bytes the origin sent for a cold minimal-ISO BMC read, against the bytes the client read.
    const bmcStart = Date.now()
    const bmc = await bmcRead(`${service.base}/byid/${INFRA_ENV}/${version(2)}/${ARCH}/minimal.iso`, BMC_PARALLEL)
    // nginx logs a request when it ends; give the last line a moment.
    await sleep(200)
    const file2 = origin.accessLog().filter(r => r.uri === `/${originFile(2)}` && r.status === 206)
    const during = file2.filter(r => r.timeMs >= bmcStart)
    const fetched = during.reduce((sum, r) => sum + r.bytes, 0)
    const preparation = file2.filter(r => r.timeMs >= instanceStart && r.timeMs < bmcStart).reduce((sum, r) => sum + r.bytes, 0)
    line(`minimal ISO, cold BMC read (HEAD + 256 KiB ranges, ${BMC_PARALLEL} at a time): client read (anchor)`, `${size(bmc.bytes)} in ${secs(bmc.ms)}`)
    line('  bytes the origin sent for it (206 answers; target <= 1.1x)', `${size(fetched)} in ${during.length} ranges ${ratio(fetched, bmc.bytes)}; preparation had fetched ${size(preparation)} before`)

    // 6: private memory after the load, idle.
    await sleep(IDLE_MS)
    const loaded = await privateMemory(service)
    line('rss_anon at ready, idle 5 s, all processes (anchor)', memoryText(idleMemory))
    line('rss_anon after figures 3-5, idle 5 s (target < 160 MiB)', `${memoryText(loaded)} ${ratio(memorySum(loaded), memorySum(idleMemory))}`)
    line('  the same from /proc/PID/status RssAnon, just after', mib(processRssAnon(service.child.pid!)))
  } finally {
    for (const service of services) await stopService(service)
    await origin?.stop()
    process.removeListener('SIGINT', onSignal)
    rmSync(work, { recursive: true, force: true })
  }
  process.stdout.write('\n')
}
