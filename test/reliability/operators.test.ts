// What a new operator runs into: a bad DATA_DIR, a half configuration, TLS links, dates that move.
import t from 'tap'
import { getEventListeners } from 'node:events'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { checkDataDir } from '../../server.ts'
import { ConfigError, loadConfig } from '../../services/config.ts'
import { sleep } from '../../services/io/backoff.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'

t.test('DATA_DIR that is a file, under /proc, or fine', async t => {
  const dir = t.testdir()
  writeFileSync(join(dir, 'a-file'), '')
  await t.rejects(checkDataDir(join(dir, 'a-file')), { message: `DATA_DIR ${join(dir, 'a-file')} is not a writable directory (ENOTDIR)` })
  await t.rejects(checkDataDir(join(dir, 'a-file', 'below')), /is not a writable directory \(ENOTDIR\)/)
  // Node's own recursive mkdir never returns here; ours answers at once.
  await t.rejects(checkDataDir('/proc/ais-does-not-exist/data'), /^DATA_DIR \/proc\/ais-does-not-exist\/data is not a writable directory/)
  await t.resolves(checkDataDir(join(dir, 'new', 'data')), 'a missing directory is created')
})

t.test('ASSISTED_SERVICE_HOST (or INFRAENVS_DIR) without OS_IMAGES is a configuration error, not zero images', async t => {
  for (const env of [{ ASSISTED_SERVICE_HOST: 'assisted:8090' }, { INFRAENVS_DIR: '/tmp' }]) {
    let problems: string[] = []
    try { loadConfig({ DATA_DIR: t.testdirName, ...env }) } catch (err) { if (err instanceof ConfigError) problems = err.problems }
    t.ok(problems.some(p => /^OS_IMAGES: required when/.test(p)), `${Object.keys(env)[0]}: ${problems.join('; ')}`)
  }
  t.equal(loadConfig({ DATA_DIR: t.testdirName }).demo, true, 'neither: the demo')
})

t.test('with TLS the default IMAGE_SERVICE_BASE_URL is https', async t => {
  const dir = t.testdir({ 'cert.pem': 'x', 'key.pem': 'y' })
  const config = loadConfig({ DATA_DIR: dir, LISTEN_PORT: '8443', HTTPS_CERT_FILE: join(dir, 'cert.pem'), HTTPS_KEY_FILE: join(dir, 'key.pem') })
  t.equal(config.imageServiceBaseUrl, 'https://localhost:8443')
  t.equal(loadConfig({ DATA_DIR: dir, LISTEN_PORT: '8080' }).imageServiceBaseUrl, 'http://localhost:8080')
})

t.test('without an upstream Last-Modified, an image keeps one stable date', async t => {
  const isos = await routeIsos(t.testdir())
  const { app } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: Buffer.from('{"ignition":{"version":"3.2.0"}}') } } })
  const url = `/byid/${ID}/${X86_VERSION}/x86_64/full.iso`
  const first = await app.inject({ method: 'HEAD', url })
  await new Promise(resolve => setTimeout(resolve, 1100))
  const second = await app.inject({ method: 'HEAD', url })
  t.equal(second.headers['last-modified'], first.headers['last-modified'], 'the same date a second later')
  const conditional = await app.inject({ method: 'GET', url, headers: { 'if-unmodified-since': String(first.headers['last-modified']), range: 'bytes=0-9' } })
  t.equal(conditional.statusCode, 206, 'If-Unmodified-Since with that date passes')
  const ifRange = await app.inject({ method: 'GET', url, headers: { 'if-range': String(first.headers['last-modified']), range: 'bytes=0-9' } })
  t.equal(ifRange.statusCode, 206, 'a date If-Range matches')
})

t.test('retry waits leave no abort listener behind', async t => {
  const controller = new AbortController()
  for (let i = 0; i < 50; i++) await sleep(1, controller.signal)
  t.equal(getEventListeners(controller.signal, 'abort').length, 0)
  const pending = sleep(60_000, controller.signal)
  controller.abort(new Error('closing'))
  await t.rejects(pending, /closing/)
})

t.test('SIGTERM with a download in flight: the download stops, nothing partial is left, exit 0', async t => {
  const { default: http } = await import('node:http')
  const { readdirSync } = await import('node:fs')
  const { handleShutdown } = await import('../../server.ts')
  const { listen } = await import('../helper.ts')
  let requested = false
  const mirror = http.createServer((_req, res) => {
    requested = true
    res.writeHead(200, { 'content-length': String(200 << 20) })
    const timer = setInterval(() => res.write(Buffer.alloc(64 << 10)), 20)
    res.on('close', () => clearInterval(timer))
  })
  await new Promise<void>(resolve => mirror.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { mirror.closeAllConnections(); mirror.close(() => resolve()) }))
  const port = (mirror.address() as import('node:net').AddressInfo).port
  const dataDir = join(t.testdir(), 'data')
  const { fastify } = await listen(t, {
    DATA_DIR: dataDir,
    INFRAENVS_DIR: t.testdirName,
    OS_IMAGES: JSON.stringify([{ openshift_version: '4.19', cpu_architecture: 'x86_64', url: `http://127.0.0.1:${port}/rhcos.iso`, version: '419.1' }])
  })
  for (let i = 0; i < 100; i++) {
    if (requested) break
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  t.ok(requested, 'the download started')
  await new Promise(resolve => setTimeout(resolve, 200))
  const partial = readdirSync(join(dataDir, 'tmp')).filter(n => n.endsWith('.part'))
  t.equal(partial.length, 1, 'a .part file is being written')
  let exitCode: number | undefined
  const started = Date.now()
  handleShutdown(fastify, 10, code => { exitCode = code })
  process.emit('SIGTERM')
  for (let i = 0; i < 150; i++) {
    if (exitCode !== undefined) break
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  t.equal(exitCode, 0, `exit 0 after ${Date.now() - started} ms, well inside the grace period`)
  t.same(readdirSync(join(dataDir, 'tmp')).filter(n => n.endsWith('.part')), [], 'the partial download is removed')
  t.same(readdirSync(dataDir).filter(n => n.endsWith('.iso')), [], 'and never became an image')
})
