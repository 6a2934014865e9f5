import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { pathToFileURL } from 'node:url'
import { buildSyntheticIso } from '../../../services/coreos/synthetic-iso.ts'
import { ImageStore } from '../../../services/store/image-store.ts'
import type { StoreConfig } from '../../../services/store/store-types.ts'
import type { OsImageEntry } from '../../../services/store/os-image-entry.ts'
import { startMirror } from '../../fixtures/mirror.ts'
import { missingTools } from '../../fixtures/tools.ts'

const FAST = { retryBaseMs: 50, retryMaxMs: 200, downloadBackoffMs: 10, downloadAttempts: 4, progressIntervalMs: 0 }

function entry (version: string, url: string, extra: Partial<OsImageEntry> = {}): OsImageEntry {
  return { openshiftVersion: '4.17', cpuArchitecture: 'x86_64', url, version, type: 'full-iso', ...extra }
}

function quietLog () {
  const lines: Array<{ level: string, msg: string, obj: object }> = []
  const at = (level: string) => (obj: object, msg: string) => { lines.push({ level, msg, obj }) }
  return { log: { info: at('info'), warn: at('warn'), error: at('error') }, lines }
}

function storeFor (t: Test, dataDir: string, osImages: OsImageEntry[], extra: Partial<StoreConfig> = {}) {
  const { log, lines } = quietLog()
  let bytes = 0
  let failures = 0
  const store = new ImageStore({
    // Whole downloads (OS_IMAGES_FETCH=eager); images read by blocks are test/reliability/lazy-origin.test.ts's.
    config: {
      dataDir,
      dataTempDir: `${dataDir}/tmp`,
      osImages,
      imageServiceBaseUrl: 'http://images.example:8080',
      osImagesRequestHeaders: {},
      osImagesRequestQueryParams: {},
      insecureSkipVerify: false,
      proxy: {},
      osImagesFetch: 'eager',
      ...extra
    },
    log,
    metrics: { downloadedBytes: n => { bytes += n }, downloadFailed: () => { failures++ }, readyChanged: () => {} },
    timing: FAST
  })
  t.teardown(() => store.close())
  return { store, lines, stats: () => ({ bytes, failures }) }
}

const sha = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex')

t.test('downloads in parallel, verifies, names files like upstream, prepares templates', async t => {
  const dir = t.testdir({ isos: {} })
  const a = await buildSyntheticIso({ dir: `${dir}/isos`, volumeId: 'rhcos-417.94.1' })
  mkdirSync(`${dir}/isos/b`)
  const b = await buildSyntheticIso({ dir: `${dir}/isos/b`, volumeId: 'scos-9.0.1', arch: 'aarch64' })
  const mirror = await startMirror(t, { '/a.iso': { path: a }, '/b.iso': { path: b } })
  const { store, stats } = storeFor(t, `${dir}/data`, [
    entry('417.94.1', `${mirror.url}/a.iso`, { sha256: sha(a) }),
    entry('9.0.1', `${mirror.url}/b.iso`, { cpuArchitecture: 'aarch64', openshiftVersion: '4.18' })
  ])
  t.notOk(store.allReady())
  await store.start()
  await store.settled()
  t.ok(store.allReady())
  t.same(readdirSync(`${dir}/data`).filter(n => n.endsWith('.iso')).sort(), ['rhcos-full-iso-417.94.1-x86_64.iso', 'rhcos-full-iso-9.0.1-aarch64.iso'])
  t.equal(sha(`${dir}/data/rhcos-full-iso-417.94.1-x86_64.iso`), sha(a))
  const prepared = store.get('417.94.1@x86_64@full-iso')!
  t.ok(prepared.templates['full-iso'])
  t.ok(prepared.templates['minimal-iso'], 'minimal template built')
  t.ok(prepared.initrd)
  t.ok(stats().bytes >= 2 * (100 << 20))
  t.equal(store.find('4.18', 'aarch64')?.version, '9.0.1', 'lookup by openshift_version')
  t.equal(store.find('9.0.1', 'x86_64'), undefined, 'same arch only')
})

t.test('custom headers, query parameters and a private CA over HTTPS', { skip: missingTools('openssl') }, async t => {
  const dir = t.testdir({ isos: {} })
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`], { stdio: 'ignore' })
  const iso = await buildSyntheticIso({ dir: `${dir}/isos`, volumeId: 'rhcos-417.94.2' })
  const mirror = await startMirror(t, { '/x.iso': { path: iso, requireHeader: ['X-Mirror-Token', 'abc'], requireQuery: ['sig', 's1'] } },
    { cert: readFileSync(`${dir}/cert.pem`, 'utf8'), key: readFileSync(`${dir}/key.pem`, 'utf8') })
  const withoutCa = storeFor(t, `${dir}/no-ca`, [entry('417.94.2', `${mirror.url}/x.iso`)], { osImagesRequestHeaders: { 'X-Mirror-Token': 'abc' }, osImagesRequestQueryParams: { sig: 's1' } })
  await withoutCa.store.start()
  await withoutCa.store.settled()
  t.notOk(withoutCa.store.allReady(), 'an unknown CA is refused')
  await withoutCa.store.close()

  const { store } = storeFor(t, `${dir}/data`, [entry('417.94.2', `${mirror.url}/x.iso`)], {
    osImagesRequestHeaders: { 'X-Mirror-Token': 'abc' }, osImagesRequestQueryParams: { sig: 's1' }, osImageDownloadCaFile: `${dir}/cert.pem`
  })
  await store.start()
  await store.settled()
  t.ok(store.allReady())
  const last = mirror.requests[mirror.requests.length - 1]!
  t.equal(last.headers['x-mirror-token'], 'abc')
  t.match(last.url, /sig=s1/)
})

t.test('chunked bodies, a cut connection, a 500: the final file is always right', async t => {
  const dir = t.testdir({ isos: {} })
  const iso = await buildSyntheticIso({ dir: `${dir}/isos`, volumeId: 'rhcos-417.94.3' })
  const mirror = await startMirror(t, {
    '/chunked.iso': { path: iso, behavior: 'chunked' },
    '/cut.iso': { path: iso, behavior: 'cut-once' },
    '/fail.iso': { path: iso, behavior: 'fail-once' }
  })
  for (const name of ['chunked', 'cut', 'fail']) {
    const { store, lines } = storeFor(t, `${dir}/${name}`, [entry('417.94.3', `${mirror.url}/${name}.iso`)])
    await store.start()
    await store.settled()
    t.ok(store.allReady(), `${name}: ready`)
    t.equal(sha(`${dir}/${name}/rhcos-full-iso-417.94.3-x86_64.iso`), sha(iso), `${name}: identical bytes`)
    if (name === 'cut') {
      const resumed = mirror.requests.find(r => r.url === '/cut.iso' && r.headers.range !== undefined)
      t.match(resumed?.headers.range, /^bytes=\d+-$/, 'resumed with Range')
      t.equal(resumed?.headers['if-range'], mirror.requests.find(r => r.url === '/cut.iso') !== undefined ? `"${readFileSync(iso).length}-fixed"` : undefined, 'with If-Range')
      t.ok(lines.some(l => l.msg === 'download interrupted, retrying'))
    }
    if (name === 'fail') t.equal(mirror.requests.filter(r => r.url === '/fail.iso').length, 2)
  }
})

t.test('wrong sha256: retried; invalid volume id, too-small rootfs: refused once; never served', async t => {
  const dir = t.testdir({ good: {}, badvol: {}, small: {} })
  const good = await buildSyntheticIso({ dir: `${dir}/good`, volumeId: 'rhcos-417.94.4' })
  const badVolume = await buildSyntheticIso({ dir: `${dir}/badvol`, volumeId: 'ubuntu-24.04' })
  const small = await buildSyntheticIso({ dir: `${dir}/small`, volumeId: 'rhcos-417.94.5', rootfsSize: 1 << 20 })
  const mirror = await startMirror(t, { '/good.iso': { path: good }, '/badvol.iso': { path: badVolume }, '/small.iso': { path: small } })
  // A transfer that went wrong may go right next time; an image that is not a CoreOS live ISO stays what it is.
  const cases: Array<[string, OsImageEntry, RegExp, 'retried' | 'refused']> = [
    ['sha256', entry('417.94.4', `${mirror.url}/good.iso`, { sha256: '0'.repeat(64) }), /sha256 mismatch/, 'retried'],
    ['volume id', entry('1', `${mirror.url}/badvol.iso`), /volume id "ubuntu-24.04"/, 'refused'],
    ['rootfs', entry('417.94.5', `${mirror.url}/small.iso`), /rootfs.img is 1048576 bytes/, 'refused']
  ]
  for (const [what, e, reason, outcome] of cases) {
    const { store, lines, stats } = storeFor(t, `${dir}/data-${what.replace(' ', '')}`, [e])
    await store.start()
    await store.settled()
    for (let i = 0; i < 200 && stats().failures < 2 && store.refusal(store.keyOf(e)) === undefined; i++) await new Promise(resolve => setTimeout(resolve, 50))
    t.notOk(store.isReady(store.keyOf(e)), `${what}: not served`)
    t.ok(lines.some(l => l.level === 'error' && reason.test(String((l.obj as { error?: string }).error))), `${what}: reason logged`)
    if (outcome === 'retried') {
      t.ok(stats().failures >= 2, `${what}: retried with backoff`)
    } else {
      t.match(store.refusal(store.keyOf(e)), reason, `${what}: refused, with the reason`)
      await new Promise(resolve => setTimeout(resolve, 300))
      t.equal(mirror.requests.filter(r => r.method === 'GET' && new URL(r.url, 'http://m').pathname === new URL(e.url).pathname).length, 1, `${what}: downloaded once, not again`)
    }
    t.same(readdirSync(`${dir}/data-${what.replace(' ', '')}`).filter(n => n.endsWith('.iso')), [], `${what}: nothing under the final name`)
    await store.close()
  }
})

t.test('cleanup, restart without download, file:// entries, a failing mirror does not block others', async t => {
  const dir = t.testdir({ isos: {}, data: { 'rhcos-full-iso-old-x86_64.iso': 'stale', 'nmstatectl-old-x86_64': 'stale', 'notes.txt': 'mine', demo: { 'keep.txt': 'x' } } })
  const iso = await buildSyntheticIso({ dir: `${dir}/isos`, volumeId: 'rhcos-417.94.6' })
  const mirror = await startMirror(t, { '/x.iso': { path: iso }, '/gone.iso': { path: iso, behavior: 'not-found' } })
  const entries = [
    entry('417.94.6', `${mirror.url}/x.iso`),
    entry('417.94.7', pathToFileURL(iso).href),
    entry('417.94.8', `${mirror.url}/gone.iso`)
  ]
  writeFileSync(`${dir}/data/nmstatectl-417.94.6-x86_64`, 'cached binary')
  const first = storeFor(t, `${dir}/data`, entries)
  await first.store.start()
  await first.store.settled()
  t.ok(first.store.isReady('417.94.6@x86_64@full-iso'))
  t.ok(first.store.isReady('417.94.7@x86_64@full-iso'), 'file:// served in place')
  t.notOk(first.store.isReady('417.94.8@x86_64@full-iso'), 'the broken mirror entry is not ready')
  t.notOk(first.store.allReady())
  t.notOk(existsSync(`${dir}/data/rhcos-full-iso-old-x86_64.iso`), 'stale ISO removed')
  t.notOk(existsSync(`${dir}/data/nmstatectl-old-x86_64`), 'stale nmstatectl removed')
  t.ok(existsSync(`${dir}/data/nmstatectl-417.94.6-x86_64`), 'configured nmstatectl cache kept')
  t.ok(existsSync(`${dir}/data/notes.txt`) && existsSync(`${dir}/data/demo/keep.txt`), 'files that are not ours stay')
  t.notOk(existsSync(`${dir}/data/rhcos-full-iso-417.94.7-x86_64.iso`), 'file:// is not copied')
  await first.store.close()

  const before = mirror.requests.filter(r => r.url === '/x.iso').length
  const second = storeFor(t, `${dir}/data`, entries.slice(0, 2))
  const started = performance.now()
  await second.store.start()
  await second.store.settled()
  const elapsed = performance.now() - started
  t.ok(second.store.allReady())
  t.equal(mirror.requests.filter(r => r.url === '/x.iso').length, before, 'no new download')
  t.comment(`restart to ready: ${elapsed.toFixed(0)} ms for two images`)
})

t.test('downloads go through HTTP_PROXY; progress is logged with bytes, percent, rate and ETA', async t => {
  const dir = t.testdir({ isos: {} })
  const iso = await buildSyntheticIso({ dir: `${dir}/isos`, volumeId: 'rhcos-417.94.30' })
  const mirror = await startMirror(t, { '/x.iso': { path: iso } })
  const proxied: string[] = []
  const proxy = http.createServer((req, res) => {
    proxied.push(req.url!)
    const target = new URL(req.url!)
    http.get(`${mirror.url}${target.pathname}`, { headers: req.headers.range !== undefined ? { range: req.headers.range } : {} }, upstream => {
      res.writeHead(upstream.statusCode!, upstream.headers)
      upstream.pipe(res)
    })
  })
  await new Promise<void>(resolve => proxy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { proxy.closeAllConnections(); proxy.close(() => resolve()) }))
  const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`
  // The mirror's name is never resolved: the proxy answers for it.
  const { store, lines } = storeFor(t, `${dir}/data`, [entry('417.94.30', 'http://mirror.proxied.example/x.iso')], { proxy: { http: proxyUrl } })
  await store.start()
  await store.settled()
  t.ok(store.allReady())
  t.equal(proxied[0], 'http://mirror.proxied.example/x.iso', 'the request went to the proxy in absolute form')
  const progress = lines.filter(l => l.msg === 'downloading').map(l => l.obj as Record<string, unknown>)
  t.ok(progress.length > 0)
  t.match(progress[progress.length - 1], { image: '417.94.30@x86_64@full-iso', bytes: Number, percent: Number, bytesPerSecond: Number })
  t.notOk(JSON.stringify(lines).includes('mirror.proxied.example'), 'log lines name the image, not its URL')
})
