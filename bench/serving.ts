// The serving targets of issue 17, from one run: ours (memory-mapped files, the default process set) against
// goserve (the Go original's serving path) over plain HTTP and HTTPS, in interleaved pairs; the memory every
// process holds; and the event loop while pages come from disk.
import { spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { FilePool } from '../services/compose/file-pool.ts'
import { fileTemplate } from '../services/coreos/customize.ts'
import { IsoImage } from '../services/iso9660/reader.ts'
import { warmCompileCache } from '../deploy/warm-compile-cache.ts'
import { CACHE, curlThroughput, freePort, has, line, rangeLoad, ratio, ROOT, startProcess } from './lib.ts'

const gbps = (x: number): string => `${(x / 1e9).toFixed(2)} GB/s`
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`

function processTree (pid: number): number[] {
  const children = readdirSync('/proc').filter(n => /^\d+$/.test(n)).filter(n => {
    try { return readFileSync(`/proc/${n}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1] === String(pid) } catch { return false }
  }).map(Number)
  return [pid, ...children]
}

function status (pid: number, field: 'VmRSS' | 'RssAnon'): number {
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024
}

function memory (pid: number): string {
  const tree = processTree(pid)
  const anon = tree.map(p => status(p, 'RssAnon'))
  const rss = tree.map(p => status(p, 'VmRSS'))
  return `RssAnon ${mib(anon.reduce((a, b) => a + b, 0))} (${anon.map(mib).join(' + ')}), VmRSS ${mib(rss.reduce((a, b) => a + b, 0))}`
}

/** Drops the file's pages from the page cache (clean pages only: the ISO was written long before). */
async function dropFromPageCache (path: string): Promise<void> {
  const { default: koffi } = await import('koffi')
  const fadvise = koffi.load('libc.so.6').func('int posix_fadvise(int fd, int64_t offset, int64_t len, int advice)') as (fd: number, o: number, l: number, a: number) => number
  const fd = openSync(path, 'r')
  try { if (fadvise(fd, 0, 0, 4) !== 0) throw new Error('posix_fadvise failed') } finally { closeSync(fd) }
}

async function fakeAssisted (): Promise<{ host: string, close: () => void }> {
  const server = http.createServer((req, res) => {
    if (req.url!.includes('/downloads/files')) res.end('{"ignition":{"version":"3.2.0"}}')
    else if (req.url!.includes('minimal-initrd')) res.writeHead(204).end()
    else res.end('{"kernel_arguments":"[]"}')
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => server.close() }
}

/** Polls with curl (which takes the run's self-signed certificate) until `url` answers 2xx. */
async function untilServed (url: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if (spawnSync('curl', ['-skf', '-o', '/dev/null', '-r', '0-0', url]).status === 0) return
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw new Error(`${url} never answered`)
}

export async function benchServing (isoPath: string, isoSize: number): Promise<void> {
  process.stdout.write('Serving from memory maps against goserve (every pair from this run, goserve first)\n')
  const goserve = `${ROOT}../shared/bench-anchors/goserve`
  if (!has('go') || !has('wrk') || !existsSync(goserve)) {
    line('serving', 'skipped: needs golang-go, wrk and the team\'s bench anchors beside this checkout')
    return
  }
  const upstream = await fakeAssisted()
  const version = '9.6.20250101-0'
  const cert = `${CACHE}tls/cert.pem`
  const key = `${CACHE}tls/key.pem`
  if (!existsSync(cert)) {
    mkdirSync(`${CACHE}tls`, { recursive: true })
    spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '30', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' })
  }
  const compileCache = `${CACHE}compile-cache`
  await warmCompileCache(compileCache)
  const children: ChildProcess[] = []
  const service = async (extra: Record<string, string>): Promise<{ url: string, child: ChildProcess, base: string }> => {
    const port = await freePort()
    const tls = extra.HTTPS_CERT_FILE !== undefined
    const dataDir = `${CACHE}data-${port}`
    mkdirSync(dataDir, { recursive: true })
    const child = startProcess(process.execPath, [`${ROOT}server.ts`], {
      LISTEN_PORT: String(port),
      DATA_DIR: dataDir,
      LOG_LEVEL: 'warn',
      ASSISTED_SERVICE_HOST: upstream.host,
      NODE_COMPILE_CACHE: compileCache,
      OS_IMAGES: JSON.stringify([{ openshift_version: '4.17', cpu_architecture: 'x86_64', url: `file://${isoPath}`, version }]),
      ...extra
    })
    children.push(child)
    const base = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`
    await untilServed(`${base}/health`)
    return { url: `${base}/byid/0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c/${version}/x86_64/full.iso`, child, base }
  }

  const bin = `${CACHE}goserve`
  spawnSync('go', ['build', '-o', bin, '.'], { cwd: goserve, stdio: 'ignore', env: { ...process.env, GOFLAGS: '-mod=mod', GOCACHE: `${CACHE}gocache`, GOPATH: `${CACHE}gopath` } })
  const image = await IsoImage.open(isoPath)
  const area = (await fileTemplate(image, 'full-iso', 'x86_64', new FilePool())).areas.ignition!
  await image.close()
  const go = async (tls: boolean): Promise<string> => {
    const port = await freePort()
    children.push(startProcess(bin, [isoPath, String(port), String(area.offset), String(area.length)], tls ? { TLS_CERT: cert, TLS_KEY: key } : {}))
    const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}/x.iso`
    await untilServed(url)
    return url
  }

  const plain = await service({})
  const goPlain = await go(false)
  await curlThroughput(plain.url, 1)
  await curlThroughput(goPlain, 1)
  const pairs = async (label: string, target: string, a: string, b: string, clients: number): Promise<void> => {
    const results: string[] = []
    for (let i = 0; i < 2; i++) {
      const theirs = await curlThroughput(a, clients)
      const ours = await curlThroughput(b, clients)
      results.push(`${gbps(ours)} vs ${gbps(theirs)} ${ratio(ours, theirs)}`)
    }
    line(`${label}, ${clients} client(s) (target >= ${target})`, results.join('; '))
  }
  await pairs('full ISO, plain HTTP', '1.3x', goPlain, plain.url, 1)
  await pairs('full ISO, plain HTTP', '1.3x', goPlain, plain.url, 8)

  for (const [name, target, connections, bytes] of [['random 64 KiB ranges, 8 conns', '1.6x', 8, 65536], ['random 256 KiB ranges, 16 conns', '1.5x', 16, 262144]] as const) {
    const theirs = await rangeLoad(goPlain, isoSize, connections, 5, bytes)
    const ours = await rangeLoad(plain.url, isoSize, connections, 5, bytes)
    line(`${name} (target >= ${target})`, ours === undefined || theirs === undefined ? 'no wrk summary' : `${ours.rate.toFixed(0)} vs ${theirs.rate.toFixed(0)} req/s ${ratio(ours.rate, theirs.rate)}`)
  }
  const rackGo = await rangeLoad(goPlain, isoSize, 150, 8)
  const rackOurs = await rangeLoad(plain.url, isoSize, 150, 8)
  const rack = (r: typeof rackGo): string => r === undefined ? 'no wrk summary' : `${r.p99Ms.toFixed(0)} ms (${r.rate.toFixed(0)} req/s, ${r.errors})`
  line('a rack: 150 conns of random 256 KiB ranges, p99 (target <= goserve, 0 errors)', `${rack(rackOurs)} vs ${rack(rackGo)}`)
  await new Promise(resolve => setTimeout(resolve, 2000))
  line('private memory after load, idle, all processes (target RssAnon < 160 MiB)', memory(plain.child.pid!))

  const sockets: http.ClientRequest[] = []
  for (let i = 0; i < 200; i++) {
    const req = http.get(plain.url, { agent: false }, res => { res.pause() })
    req.on('error', () => {})
    sockets.push(req)
  }
  await new Promise(resolve => setTimeout(resolve, 3000))
  line('with 200 stalled readers (target RssAnon < 256 MiB)', memory(plain.child.pid!))
  for (const s of sockets) s.destroy()

  const secure = await service({ HTTPS_CERT_FILE: cert, HTTPS_KEY_FILE: key })
  const goTls = await go(true)
  await curlThroughput(secure.url, 1)
  await pairs('full ISO, HTTPS', '1.5x', goTls, secure.url, 1)
  await pairs('full ISO, HTTPS', '1.5x', goTls, secure.url, 8)
  secure.child.kill('SIGTERM')

  const reads = await service({ MMAP_IMAGE_FILES: 'false' })
  await curlThroughput(reads.url, 1)
  await pairs('the fallback (MMAP_IMAGE_FILES=false), plain HTTP', 'as before', goPlain, reads.url, 1)
  await pairs('the fallback (MMAP_IMAGE_FILES=false), plain HTTP', 'as before', goPlain, reads.url, 8)
  reads.child.kill('SIGTERM')
  plain.child.kill('SIGTERM')

  // One serving process, so that its event-loop histogram is the one measured; read through its own metrics.
  // Cold: the pages are dropped before the service starts, as for a freshly downloaded or evicted ISO (pages a
  // process has mapped are not dropped), and the clients start as soon as /health says ready.
  for (const cold of [false, true]) {
    if (cold) await dropFromPageCache(isoPath)
    const single = await service({ WORKERS: '1' })
    const lagP99 = async (): Promise<number> => {
      const text = await (await fetch(`${single.base}/metrics`)).text()
      return Number(/^assisted_image_service_nodejs_eventloop_lag_p99_seconds (\S+)$/m.exec(text)![1]) * 1000
    }
    if (!cold) await curlThroughput(single.url, 1)
    await lagP99() // prom-client resets the histogram at each scrape
    const rate = await curlThroughput(single.url, 8)
    line(`event-loop delay p99, 8 clients, ${cold ? 'pages dropped from the page cache first' : 'warm page cache'} (target < 50 ms)`, `${(await lagP99()).toFixed(1)} ms at ${gbps(rate)}`)
    single.child.kill('SIGTERM')
  }
  for (const child of children) child.kill('SIGTERM')
  upstream.close()
  process.stdout.write('\n')
}
