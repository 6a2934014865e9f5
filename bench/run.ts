// Benchmarks, on demand: `npm run bench [-- section...]`. Sections: nmstate, iso, compose, minimal, service, serving, lazy.
// Every number is printed next to an anchor measured in the same run on the same machine.
import { spawnSync, type ChildProcess } from 'node:child_process'
import { createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import os from 'node:os'
import { Writable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { ComposedImage } from '../services/compose/composed-image.ts'
import { ImageWriter } from '../services/compose/image-writer.ts'
import { FilePool } from '../services/compose/file-pool.ts'
import { buildMinimalTemplate } from '../services/coreos/minimal-template.ts'
import { fileTemplate } from '../services/coreos/customize.ts'
import { IsoImage } from '../services/iso9660/reader.ts'
import { optionsFromImage, treeFromImage } from '../services/iso9660/remaster.ts'
import { planIso } from '../services/iso9660/writer.ts'
import { benchNmstate } from './nmstate.ts'
import { benchServing } from './serving.ts'
import { benchLazy } from './lazy.ts'
import { warmCompileCache } from '../deploy/warm-compile-cache.ts'
import { benchIso, CACHE, curlThroughput, freePort, has, line, rangeRate, ratio, ROOT, startProcess, waitFor } from './lib.ts'

const sections = process.argv.slice(2)
const want = (name: string) => sections.length === 0 || sections.includes(name)
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const ms = (x: number) => `${x.toFixed(2)} ms`
const gbps = (x: number) => `${(x / 1e9).toFixed(2)} GB/s`

function timeCommand (command: string, args: string[]): number {
  const started = performance.now()
  const result = spawnSync(command, args, { stdio: 'ignore' })
  if (result.status !== 0) return Number.NaN
  return performance.now() - started
}

class Discard extends Writable {
  override _write (_chunk: Buffer, _encoding: string, callback: () => void): void { callback() }
}

process.stdout.write(`assisted-image-service benchmarks — ${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}\n`)
if (want('nmstate')) await benchNmstate()
// nmstate needs no ISO, and lazy makes the size it is asked for (LAZY_BENCH_IMAGE_MIB): the 1 GiB one is made only for the rest.
if (sections.length > 0 && sections.every(s => s === 'nmstate' || s === 'lazy')) {
  if (want('lazy')) await benchLazy()
  process.exit(0)
}
const isoPath = await benchIso()
const isoSize = statSync(isoPath).size
process.stdout.write(`ISO: ${isoPath} (${(isoSize / 2 ** 30).toFixed(2)} GiB)\n\n`)

if (want('iso')) {
  process.stdout.write('ISO 9660 toolkit\n')
  const paths = ['/coreos/igninfo.json', '/coreos/kargs.json', '/EFI/redhat/grub.cfg', '/isolinux/isolinux.cfg', '/images/ignition.img',
    '/images/pxeboot/vmlinuz', '/images/pxeboot/initrd.img', '/images/pxeboot/rootfs.img', '/IMAGES/PXEBOOT/ROOTFS.IMG', '/images/efiboot.img']
  const opens: number[] = []
  const lookups: number[] = []
  const plans: number[] = []
  for (let i = 0; i < 20; i++) {
    let t0 = performance.now()
    const image = await IsoImage.open(isoPath)
    opens.push(performance.now() - t0)
    t0 = performance.now()
    for (const p of paths) if (image.lookup(p) === undefined) throw new Error(`missing ${p}`)
    lookups.push(performance.now() - t0)
    t0 = performance.now()
    await planIso(treeFromImage(image), await optionsFromImage(image))
    plans.push(performance.now() - t0)
    await image.close()
  }
  const xorrisoList = has('xorriso') ? timeCommand('xorriso', ['-indev', isoPath, '-find', '/', '-exec', 'report_lba', '--']) : undefined
  line('open (parse all metadata), median', ms(median(opens)))
  line('resolve 10 paths after open, median (target < 5 ms)', ms(median(lookups)))
  line('plan a full re-layout, median (target < 20 ms)', ms(median(plans)))
  if (xorrisoList !== undefined) line('xorriso -indev + report_lba of every file', `${ms(xorrisoList)} ${ratio(median(opens) + median(lookups), xorrisoList, false)}`)
  else line('xorriso', 'not installed (apt-get install xorriso)')
  process.stdout.write('\n')
}

if (want('compose')) {
  process.stdout.write('Composed image streaming (full ISO into a discard sink, best of 3)\n')
  const image = await ComposedImage.fromSegments([{ kind: 'file', path: isoPath, offset: 0, length: isoSize }])
  const custom = image.patch(1 << 20, Buffer.alloc(4096, 1), 256 << 10)
  const writer = new ImageWriter()
  let ours = 0
  let plain = 0
  for (let i = 0; i < 3; i++) {
    let t0 = performance.now()
    await pipeline(createReadStream(isoPath, { highWaterMark: 1 << 20 }), new Discard())
    plain = Math.max(plain, isoSize / ((performance.now() - t0) / 1000))
    t0 = performance.now()
    await writer.writeTo(custom, new Discard())
    ours = Math.max(ours, isoSize / ((performance.now() - t0) / 1000))
  }
  line('fs.createReadStream 1 MiB (anchor)', gbps(plain))
  line('ImageWriter.writeTo, buffer pool (target >= 1.3x)', `${gbps(ours)} ${ratio(ours, plain)}`)
  await image.pool.close()
  process.stdout.write('\n')
}

if (want('minimal')) {
  process.stdout.write('Minimal ISO template\n')
  const image = await IsoImage.open(isoPath)
  const times: number[] = []
  for (let i = 0; i < 10; i++) {
    const pool = new FilePool()
    const t0 = performance.now()
    await buildMinimalTemplate(image, { arch: 'x86_64', rootfsUrl: 'http://localhost:8080/boot-artifacts/rootfs?arch=x86_64&version=1' }, pool)
    times.push(performance.now() - t0)
    await pool.close()
  }
  await image.close()
  line('build the minimal template, median (target < 50 ms)', ms(median(times)))
  if (has('xorriso')) {
    const out = `${CACHE}xorriso-minimal.iso`
    const x = timeCommand('xorriso', ['-indev', isoPath, '-outdev', out, '-boot_image', 'any', 'replay', '-rm', '/images/pxeboot/rootfs.img', '--', '-commit'])
    rmSync(out, { force: true })
    line('xorriso -indev FULL -outdev MIN -boot_image any replay -rm rootfs', `${ms(x)} ${ratio(median(times), x, false)}`)
  } else line('xorriso', 'not installed (apt-get install xorriso)')
  process.stdout.write('\n')
}

/** A fake assisted-service that counts calls. */
async function fakeAssisted () {
  let calls = 0
  const server = http.createServer((req, res) => {
    calls++
    if (req.url!.includes('/downloads/files')) res.end('{"ignition":{"version":"3.2.0"}}')
    else if (req.url!.includes('minimal-initrd')) res.writeHead(204).end()
    else res.end('{"kernel_arguments":"[{\\"operation\\":\\"append\\",\\"value\\":\\"console=ttyS0\\"}]"}')
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, calls: () => calls, close: () => server.close() }
}

/** A process and its children (the primary and its workers). */
function processTree (pid: number): number[] {
  const children = readdirSync('/proc').filter(n => /^\d+$/.test(n)).filter(n => {
    try { return readFileSync(`/proc/${n}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[1] === String(pid) } catch { return false }
  }).map(Number)
  return [pid, ...children]
}

function rss (pid: number, field: 'VmRSS' | 'VmHWM' = 'VmRSS'): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) * 1024
}

function pss (pid: number): number {
  return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))![1]) * 1024
}

const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`

if (want('service')) {
  process.stdout.write('Service over HTTP on 127.0.0.1\n')
  const upstream = await fakeAssisted()
  const dataDir = `${CACHE}data`
  mkdirSync(dataDir, { recursive: true })
  const port = await freePort()
  const version = '9.6.20250101-0'
  const env = {
    LISTEN_PORT: String(port),
    DATA_DIR: dataDir,
    LOG_LEVEL: 'warn',
    ASSISTED_SERVICE_HOST: upstream.host,
    OS_IMAGES: JSON.stringify([{ openshift_version: '4.17', cpu_architecture: 'x86_64', url: `file://${isoPath}`, version }]),
    // As in the container image, which ships the compile cache filled at build time.
    NODE_COMPILE_CACHE: `${CACHE}compile-cache`
  }
  await warmCompileCache(env.NODE_COMPILE_CACHE)
  const t0 = performance.now()
  const ours = startProcess(process.execPath, [`${ROOT}server.ts`], env)
  await waitFor(`http://127.0.0.1:${port}/health`)
  line('process start to /health 200 (file:// image, 1 GiB; target < 1 s)', ms(performance.now() - t0))
  await new Promise(resolve => setTimeout(resolve, 1000))
  const tree = processTree(ours.pid!)
  const workerRss = tree.slice(1).map(pid => rss(pid))
  line(`processes: 1 primary + ${tree.length - 1} workers (WORKERS default: the CPUs)`, `primary ${mib(rss(tree[0]!))}`)
  if (workerRss.length > 0) line('idle RSS per worker after start-up (target < 100 MiB)', `${workerRss.map(mib).join(', ')} (PSS ${tree.slice(1).map(pid => mib(pss(pid))).join(', ')})`)
  const id = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
  const url = `http://127.0.0.1:${port}/byid/${id}/${version}/x86_64/full.iso`

  // Anchors: goserve (the Go original's serving path), raw Node, nginx.
  const image = await IsoImage.open(isoPath)
  const template = await fileTemplate(image, 'full-iso', 'x86_64', new FilePool())
  const area = template.areas.ignition!
  const anchors: Array<{ name: string, url: string, child?: ChildProcess, server?: http.Server }> = []
  const goserve = `${ROOT}../shared/bench-anchors/goserve`
  if (has('go') && existsSync(goserve)) {
    const bin = `${CACHE}goserve`
    spawnSync('go', ['build', '-o', bin, '.'], { cwd: goserve, stdio: 'ignore', env: { ...process.env, GOFLAGS: '-mod=mod', GOCACHE: `${CACHE}gocache`, GOPATH: `${CACHE}gopath` } })
    const goPort = await freePort()
    const child = startProcess(bin, [isoPath, String(goPort), String(area.offset), String(area.length)])
    await waitFor(`http://127.0.0.1:${goPort}/x.iso`).catch(() => undefined)
    anchors.push({ name: 'goserve (Go original path)', url: `http://127.0.0.1:${goPort}/x.iso`, child })
  } else line('goserve', has('go') ? 'skipped: its source (bench-anchors/goserve) is not beside this checkout' : 'skipped: apt-get install golang-go')
  const raw = http.createServer((_req, res) => { res.writeHead(200, { 'content-length': isoSize }); createReadStream(isoPath, { highWaterMark: 1 << 20 }).pipe(res) })
  await new Promise<void>(resolve => raw.listen(0, '127.0.0.1', resolve))
  anchors.push({ name: 'raw Node createReadStream', url: `http://127.0.0.1:${(raw.address() as AddressInfo).port}/x.iso`, server: raw })
  let nginx: ChildProcess | undefined
  if (has('nginx')) {
    const nginxPort = await freePort()
    const conf = `${CACHE}nginx.conf`
    mkdirSync(`${CACHE}nginx`, { recursive: true })
    writeFileSync(conf, `daemon off; worker_processes 2; pid ${CACHE}nginx/pid; error_log ${CACHE}nginx/error.log;\nevents { worker_connections 1024; }\nhttp { access_log off; sendfile on; client_body_temp_path ${CACHE}nginx; proxy_temp_path ${CACHE}nginx; fastcgi_temp_path ${CACHE}nginx; uwsgi_temp_path ${CACHE}nginx; scgi_temp_path ${CACHE}nginx;\n server { listen 127.0.0.1:${nginxPort}; location = /x.iso { alias ${isoPath}; default_type application/octet-stream; } } }\n`)
    nginx = startProcess('nginx', ['-c', conf, '-p', CACHE])
    await waitFor(`http://127.0.0.1:${nginxPort}/x.iso`).catch(() => undefined)
    anchors.push({ name: 'nginx sendfile', url: `http://127.0.0.1:${nginxPort}/x.iso` })
  } else line('nginx', 'skipped: apt-get install nginx-light')

  await curlThroughput(url, 1)
  for (const clients of [1, 8]) {
    const measured = new Map<string, number>()
    for (const anchor of anchors) measured.set(anchor.name, await curlThroughput(anchor.url, clients))
    const mine = await curlThroughput(url, clients)
    const go = measured.get('goserve (Go original path)')
    for (const [name, value] of measured) line(`full ISO, ${clients} client(s): ${name}`, gbps(value))
    line(`full ISO, ${clients} client(s): assisted-image-service (target >= ${clients === 1 ? '1.2' : '1.3'}x goserve)`, `${gbps(mine)} ${ratio(mine, go)}`)
  }
  const size = isoSize
  const goAnchor = anchors.find(a => a.name.startsWith('goserve'))
  const goSmall = goAnchor !== undefined ? await rangeRate(goAnchor.url, size, 8, 8, 65536) : undefined
  if (goSmall !== undefined) line('random 64 KiB ranges, 8 conns: goserve', `${goSmall.toFixed(0)} req/s`)
  const ourSmall = await rangeRate(url, size, 8, 8, 65536)
  line('random 64 KiB ranges, 8 conns: ours (target >= 1.6x goserve)', `${ourSmall.toFixed(0)} req/s ${ratio(ourSmall, goSmall)}`)
  const goRate = goAnchor !== undefined ? await rangeRate(goAnchor.url, size, 16, 8) : undefined
  if (goRate !== undefined) line('random 256 KiB ranges, 16 conns: goserve', `${goRate.toFixed(0)} req/s`)
  const ourRate = await rangeRate(url, size, 16, 8)
  line('random 256 KiB ranges, 16 conns: ours (target >= 1.5x goserve)', `${ourRate.toFixed(0)} req/s ${ratio(ourRate, goRate)}`)

  const ttfb: number[] = []
  for (let i = 0; i < 20; i++) {
    const fresh = `${url.replace(id, `0b9f3a56-2d1e-4c8a-9f1b-${String(i).padStart(12, '0')}`)}`
    const t1 = performance.now()
    await new Promise<void>(resolve => http.get(fresh, { headers: { range: 'bytes=0-0' } }, res => { res.once('data', () => { ttfb.push(performance.now() - t1); res.destroy(); resolve() }) }))
  }
  line('time to first byte, customized ISO, cold upstream cache, median', ms(median(ttfb)))

  const before = upstream.calls()
  const bootUrl = url.replace(id, '0b9f3a56-2d1e-4c8a-9f1b-ffffffffffff')
  await fetch(bootUrl, { method: 'HEAD' })
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 })
  for (let i = 0; i < 500; i++) {
    const start = Math.floor(Math.random() * (size - 65536))
    await new Promise<void>(resolve => http.get(bootUrl, { agent, headers: { range: `bytes=${start}-${start + 65535}` } }, res => { res.resume(); res.on('end', resolve) }))
  }
  agent.destroy()
  line(`upstream calls for one simulated BMC boot (HEAD + 500 ranges; target <= 3 per worker, ${Math.max(1, tree.length - 1)} workers)`, String(upstream.calls() - before))

  const sockets: http.ClientRequest[] = []
  for (let i = 0; i < 200; i++) {
    const req = http.get(url, { agent: false }, res => { res.pause() })
    req.on('error', () => {})
    sockets.push(req)
  }
  await new Promise(resolve => setTimeout(resolve, 3000))
  const all = processTree(ours.pid!)
  line(`RSS of all ${all.length} processes with 200 stalled full-ISO clients (target < 256 MiB)`, mib(all.reduce((sum, pid) => sum + rss(pid), 0)))
  // RSS counts Node's shared pages once per process; PSS shares them out, as a cgroup memory limit counts them.
  line('  the same as PSS (shared pages counted once)', mib(all.reduce((sum, pid) => sum + pss(pid), 0)))
  for (const s of sockets) s.destroy()

  ours.kill('SIGTERM')
  for (const anchor of anchors) { anchor.child?.kill(); anchor.server?.close() }
  nginx?.kill('SIGQUIT')
  upstream.close()
  await image.close()
  process.stdout.write('\n')
}

if (want('serving')) await benchServing(isoPath, isoSize)
if (want('lazy')) await benchLazy()
