import t from 'tap'
import { writeFileSync } from 'node:fs'
import { ConfigError, loadConfig, parseDotEnv, processEnv } from '../../services/config.ts'

const image = { openshift_version: '4.18', cpu_architecture: 'x86_64', url: 'https://mirror.example/rhcos.iso', version: '418.94.1' }

t.test('defaults', async t => {
  const config = loadConfig({ INFRAENVS_DIR: 'envs', OS_IMAGES: JSON.stringify([image]) }, '/srv')
  t.equal(config.listenPort, 8080)
  t.equal(config.dataDir, '/srv/data')
  t.equal(config.dataTempDir, '/srv/data/tmp')
  t.equal(config.imageServiceBaseUrl, 'http://localhost:8080')
  t.equal(config.maxConcurrentRequests, 400)
  t.equal(config.requestQueueTimeoutSeconds, 60)
  t.equal(config.upstreamCacheTtlSeconds, 30)
  t.equal(config.logLevel, 'info')
  t.equal(config.assistedService.scheme, 'http')
  t.equal(config.infraEnvsDir, '/srv/envs')
  t.equal(config.demo, false)
  t.same(config.osImages, [{ openshiftVersion: '4.18', cpuArchitecture: 'x86_64', url: image.url, version: '418.94.1', type: 'full-iso' }])
})

t.test('demo mode when neither OS_IMAGES nor ASSISTED_SERVICE_HOST is set', async t => {
  t.equal(loadConfig({}).demo, true)
  t.equal(loadConfig({ ASSISTED_SERVICE_HOST: 'svc:8090', OS_IMAGES: JSON.stringify([image]) }).demo, false)
})

t.test('RHCOS_VERSIONS is read when OS_IMAGES is absent, OS_IMAGES wins', async t => {
  const other = { ...image, version: 'other' }
  t.equal(loadConfig({ ASSISTED_SERVICE_HOST: 'h', RHCOS_VERSIONS: JSON.stringify([other]) }).osImages[0]!.version, 'other')
  t.equal(loadConfig({ ASSISTED_SERVICE_HOST: 'h', RHCOS_VERSIONS: JSON.stringify([other]), OS_IMAGES: JSON.stringify([image]) }).osImages[0]!.version, '418.94.1')
})

t.test('every problem is reported at once', async t => {
  const dir = t.testdir({ 'cert.pem': 'x' })
  const err = t.throws(() => loadConfig({
    OS_IMAGES: '[{"url": "ftp://x"}',
    MAX_CONCURRENT_REQUESTS: '0',
    HTTPS_CERT_FILE: `${dir}/cert.pem`,
    ASSISTED_SERVICE_API_TRUSTED_CA_FILE: `${dir}/missing.pem`,
    LOG_LEVEL: 'loud',
    ASSISTED_SERVICE_HOST: 'svc'
  })) as ConfigError
  t.type(err, ConfigError)
  const text = err.problems.join('\n')
  t.match(text, /OS_IMAGES: invalid JSON/)
  t.match(text, /MAX_CONCURRENT_REQUESTS/)
  t.match(text, /HTTPS_CERT_FILE and HTTPS_KEY_FILE: set both or neither/)
  t.match(text, /ASSISTED_SERVICE_API_TRUSTED_CA_FILE: cannot read file/)
  t.match(text, /LOG_LEVEL: unknown level "loud"/)
  t.equal(err.problems.length, 5)
})

t.test('OS image entries are validated', async t => {
  const problems = (entries: unknown): string[] => {
    try {
      loadConfig({ ASSISTED_SERVICE_HOST: 'h', OS_IMAGES: JSON.stringify(entries) })
      return []
    } catch (err) {
      return (err as ConfigError).problems
    }
  }
  t.match(problems([{ ...image, version: undefined }]), [/OS_IMAGES\[0\]: missing or empty version/])
  t.match(problems([{ ...image, url: 'ftp://x/y.iso' }]), [/scheme ftp: is not one of/])
  t.match(problems([{ ...image, type: 'minimal-iso' }]), [/type must be full-iso or disconnected-iso/])
  t.match(problems([{ ...image, sha256: 'abc' }]), [/sha256 must be 64 hex digits/])
  t.match(problems({}), [/must be a JSON array/])
  t.match(problems([]), [/lists no OS image/])
  t.same(problems([{ ...image, url: 'file:///isos/x.iso', type: 'disconnected-iso', sha256: 'A'.repeat(64) }]), [])
})

t.test('ASSISTED_SERVICE_HOST is required unless INFRAENVS_DIR is set', async t => {
  t.throws(() => loadConfig({ OS_IMAGES: JSON.stringify([image]) }), { name: 'ConfigError', message: /ASSISTED_SERVICE_HOST: required/ })
  t.doesNotThrow(() => loadConfig({ OS_IMAGES: JSON.stringify([image]), INFRAENVS_DIR: '/x' }))
})

t.test('LOGLEVEL alias, HTTPS_CA_FILE alias, ALLOWED_DOMAINS, headers', async t => {
  const dir = t.testdir({ 'ca.pem': 'x' })
  const config = loadConfig({
    LOGLEVEL: 'debug',
    HTTPS_CA_FILE: `${dir}/ca.pem`,
    ALLOWED_DOMAINS: ' https://a.example , *,',
    OS_IMAGES_REQUEST_HEADERS: '{"X-Token":"abc"}',
    OS_IMAGES_REQUEST_QUERY_PARAMS: '{"arch":"x"}'
  })
  t.equal(config.logLevel, 'debug')
  t.equal(config.assistedService.caFile, `${dir}/ca.pem`)
  t.same(config.allowedDomains, ['https://a.example', '*'])
  t.same(config.osImagesRequestHeaders, { 'X-Token': 'abc' })
  t.same(config.osImagesRequestQueryParams, { arch: 'x' })
  t.throws(() => loadConfig({ OS_IMAGES_REQUEST_HEADERS: '{"a":1}' }), { name: 'ConfigError', message: /OS_IMAGES_REQUEST_HEADERS: must be a JSON object/ })
})

t.test('.env is read and the process environment wins', async t => {
  t.same(parseDotEnv('# comment\nA=1\nexport B="two words"\nC=\'x\' \nD=val # trailing\nnot a line'), { A: '1', B: 'two words', C: 'x', D: 'val' })
  const dir = t.testdir()
  writeFileSync(`${dir}/.env`, 'AIS_TEST_ONLY_FROM_FILE=file\nPATH=from-file\n')
  const env = processEnv(dir)
  t.equal(env.AIS_TEST_ONLY_FROM_FILE, 'file')
  t.equal(env.PATH, process.env.PATH)
})
