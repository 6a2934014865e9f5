// Operators' side of the drop-in: upstream's HTTP metric families, and the deploy/monitoring files
// checked by Prometheus's own promtool.
import t, { type Test } from 'tap'
import { spawnSync } from 'node:child_process'
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { parse, parseAllDocuments, stringify } from 'yaml'
import { jwt } from '../fixtures/fake-assisted.ts'
import { routeIsos, S390X_VERSION, startService, X86_VERSION } from '../fixtures/service.ts'
import { startServerProcess, untilHealthy } from '../fixtures/server-process.ts'
import { missingTools } from '../fixtures/tools.ts'
import { freePort } from '../helper.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const DEMO_ID = '6f7d5b1e-4a2c-4e8b-9d3f-0a1b2c3d4e5f'
const DEMO_VERSION = '9.6.20250101-0'
const DEPLOY = new URL('../../deploy/monitoring/', import.meta.url)
const noPromtool = missingTools('promtool')

const HTTP_FAMILIES = {
  assisted_image_service_http_request_duration_seconds: { type: 'histogram', labels: ['code', 'handler', 'method', 'service'], buckets: [0.1, 1, 10, 50, 100, 300, 600] },
  assisted_image_service_http_response_size_bytes: { type: 'histogram', labels: ['code', 'handler', 'method', 'service'], buckets: [100, 1e6, 5e8, 1e9, 1e10] },
  assisted_image_service_http_requests_inflight: { type: 'gauge', labels: ['handler', 'service'] }
} as const

interface Sample { name: string, labels: Record<string, string>, value: number }
interface Family { type: string, samples: Sample[] }

/** The Prometheus text exposition, by family (histogram samples under their family's name). */
function families (text: string): Map<string, Family> {
  const byName = new Map<string, Family>()
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line)
    if (type !== null) { byName.set(type[1]!, { type: type[2]!, samples: [] }); continue }
    if (line === '' || line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) throw new Error(`not an exposition line: ${line}`)
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    const family = byName.get(m[1]!) ?? byName.get(m[1]!.replace(/_(bucket|sum|count)$/, ''))
    if (family === undefined) throw new Error(`a sample without a TYPE: ${line}`)
    family.samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return byName
}

function checkHttpFamilies (t: Test, scrape: Map<string, Family>): Set<string> {
  const handlers = new Set<string>()
  for (const [name, spec] of Object.entries(HTTP_FAMILIES)) {
    const family = scrape.get(name)
    t.equal(family?.type, spec.type, `${name} is a ${spec.type}`)
    if (family === undefined) continue
    t.ok(family.samples.length > 0, `${name} has samples`)
    const labelSets = new Set(family.samples.map(s => Object.keys(s.labels).filter(l => l !== 'le').sort().join(',')))
    t.same([...labelSets], [spec.labels.join(',')], `${name}: exactly the labels ${spec.labels.join(', ')}`)
    t.ok(family.samples.every(s => s.labels.service === ''), `${name}: service is always ""`)
    if ('buckets' in spec) {
      const les = [...new Set(family.samples.filter(s => s.name.endsWith('_bucket')).map(s => s.labels.le!))]
      t.same(les, [...spec.buckets.map(String), '+Inf'], `${name}: upstream's buckets`)
    }
    for (const s of family.samples) handlers.add(s.labels.handler!)
  }
  return handlers
}

function promtool (args: string[], input?: string) {
  return spawnSync('promtool', args, { encoding: 'utf8', ...(input !== undefined ? { input } : {}) })
}

/** Metric names a PromQL expression reads (histogram series under their family). */
function metricsOf (expr: string): string[] {
  return [...expr.matchAll(/\bassisted_image_service_[a-z0-9_]+/g)].map(m => m[0].replace(/_(bucket|sum|count)$/, ''))
}

const seen = new Set<string>()

t.test('after requests to every route family, /metrics has upstream\'s three HTTP families', async t => {
  const isos = await routeIsos(t.testdir(), true)
  const { app } = await startService(t, { isos, infraEnvs: { [ID]: { ignition: Buffer.from('{"ignition":{"version":"3.2.0"}}') } } })
  const token = jwt({ sub: ID, exp: Math.floor(Date.now() / 1000) + 3600 })
  const apiKey = jwt({ infra_env_id: ID, exp: Math.floor(Date.now() / 1000) + 3600 })
  const iso = await app.inject(`/byid/${ID}/${X86_VERSION}/x86_64/full.iso`)
  const shortLink = new URL(/^<([^>]+)>/.exec(iso.headers.link as string)![1]!).pathname
  const requests = [
    `/bytoken/${token}/${X86_VERSION}/x86_64/minimal.iso`,
    `/byapikey/${apiKey}/${X86_VERSION}/x86_64/full.iso`,
    `/images/${ID}?version=${X86_VERSION}&type=minimal-iso`,
    `/images/${ID}/pxe-initrd?version=${X86_VERSION}`,
    `/images/${ID}/s390x-initrd-addrsize?version=${S390X_VERSION}`,
    `/boot-artifacts/rootfs?version=${X86_VERSION}&arch=x86_64`,
    `/boot-artifacts/kernel?version=${X86_VERSION}&arch=x86_64`,
    `/boot-artifacts/ins-file?version=${S390X_VERSION}&arch=s390x`,
    `/boot-artifacts/not-an-artifact?version=${X86_VERSION}`,
    shortLink, '/health', '/live', '/metrics'
  ]
  for (const url of requests) t.ok((await app.inject({ method: 'HEAD', url })).statusCode < 500, `HEAD ${url.slice(0, 60)}`)
  t.equal((await app.inject({ method: 'DELETE', url: `/byid/${ID}/${X86_VERSION}/x86_64/full.iso` })).statusCode, 405)

  const text = (await app.inject('/metrics')).body
  const scrape = families(text)
  for (const name of scrape.keys()) seen.add(name)
  const handlers = checkHttpFamilies(t, scrape)
  t.same([...handlers].sort(), [
    '/boot-artifacts/:artifact', '/boot-artifacts/ins-file', '/boot-artifacts/kernel', '/boot-artifacts/rootfs',
    '/byapikey/:token', '/byid/:token', '/bytoken/:token', '/health',
    '/images/:imageID', '/images/:imageID/pxe-initrd', '/images/:imageID/s390x-initrd-addrsize', '/live', '/s/:code'
  ], 'handlers are upstream\'s ids (boot artifacts by path), ours for short links and probes; never a raw URL')
  const codes = new Set(scrape.get('assisted_image_service_http_request_duration_seconds')!.samples.map(s => `${s.labels.method} ${s.labels.handler} ${s.labels.code}`))
  t.ok(codes.has('DELETE /byid/:token 405'), 'the method and the numeric status')
  t.ok(codes.has('HEAD /boot-artifacts/:artifact 404') || codes.has('HEAD /boot-artifacts/:artifact 400'), 'an unknown artifact is one label, not one each')
  t.notOk(text.includes(token) || text.includes(apiKey) || text.includes(shortLink.split('/')[2]!), 'no token or link code in a label')
  t.notOk(scrape.has('assisted_image_service_request_duration_seconds') || scrape.has('assisted_image_service_in_flight_requests'), 'our former families are gone: one family per measure')

  t.test('promtool check metrics accepts the scrape', { skip: noPromtool }, async t => {
    const result = promtool(['check', 'metrics'], text)
    t.equal(result.status, 0, `promtool: ${result.stdout}${result.stderr}`)
    t.equal(result.stdout + result.stderr, '', 'no lint')
  })
})

t.test('with two workers, the families are aggregated over the processes and promtool accepts the scrape', async t => {
  const port = await freePort()
  const dir = t.testdir()
  const server = startServerProcess(t, port, { WORKERS: '2', DATA_DIR: `${dir}/data`, LOG_LEVEL: 'warn', MAX_EVENT_LOOP_DELAY_MS: '0' }, dir)
  t.equal(await untilHealthy(server, 30_000, 100), 200, 'ready')
  const get = async (path: string, method = 'GET') => await fetch(`${server.base}${path}`, { method, headers: { connection: 'close' } })
  for (let i = 0; i < 6; i++) t.equal((await get(`/byid/${DEMO_ID}/${DEMO_VERSION}/x86_64/full.iso`, 'HEAD')).status, 200)
  for (let i = 0; i < 4; i++) t.equal((await get(`/boot-artifacts/kernel?version=${DEMO_VERSION}&arch=x86_64`, 'HEAD')).status, 200)
  const text = await (await get('/metrics')).text()
  const scrape = families(text)
  for (const name of scrape.keys()) seen.add(name)
  checkHttpFamilies(t, scrape)
  const count = scrape.get('assisted_image_service_http_request_duration_seconds')!.samples
    .filter(s => s.name.endsWith('_count') && s.labels.handler === '/byid/:token' && s.labels.method === 'HEAD')
  t.same(count.map(s => s.value), [6], 'one series: the two workers\' requests summed')
  const memory = scrape.get('assisted_image_service_process_memory_bytes')!.samples.filter(s => s.labels.kind === 'rss_anon').map(s => s.labels.process).sort()
  t.same(memory, ['primary', 'worker-1', 'worker-2'], 'memory per process, one series each')
  t.equal(scrape.get('assisted_image_service_worker_restarts_total')?.samples[0]?.value, 0, 'no worker restarted')

  t.test('promtool check metrics', { skip: noPromtool }, async t => {
    const result = promtool(['check', 'metrics'], text)
    t.equal(result.status, 0, `promtool: ${result.stdout}${result.stderr}`)
    t.equal(result.stdout + result.stderr, '', 'no lint')
  })
  server.child.kill('SIGTERM')
  t.equal(await server.exited, 0)
})

t.test('the PrometheusRule: promtool checks the rules and fires each alert from synthetic series', { skip: noPromtool }, async t => {
  const dir = t.testdir()
  const rule = parse(readFileSync(new URL('prometheus-rule.yaml', DEPLOY), 'utf8')) as { kind: string, spec: { groups: Array<{ rules: Array<{ alert: string, expr: string }> }> } }
  t.equal(rule.kind, 'PrometheusRule')
  writeFileSync(`${dir}/rules.yaml`, stringify({ groups: rule.spec.groups }))
  copyFileSync(new URL('alerts.promtool.yaml', import.meta.url), `${dir}/alerts.promtool.yaml`)
  const check = promtool(['check', 'rules', `${dir}/rules.yaml`])
  t.equal(check.status, 0, check.stdout + check.stderr)
  const alerts = rule.spec.groups.flatMap(g => g.rules.map(r => r.alert))
  const cases = readFileSync(`${dir}/alerts.promtool.yaml`, 'utf8')
  for (const alert of alerts) t.match(cases, new RegExp(`alertname: ${alert}\\n\\s+exp_alerts:\\n\\s+- exp_labels`), `${alert} has a case that fires it`)
  const unit = spawnSync('promtool', ['test', 'rules', 'alerts.promtool.yaml'], { cwd: dir, encoding: 'utf8' })
  t.equal(unit.status, 0, unit.stdout + unit.stderr)
  t.match(unit.stdout, /SUCCESS/)
})

t.test('every metric the dashboard and the alerts query is one the service exposes', async t => {
  t.ok(seen.has('assisted_image_service_http_request_duration_seconds'), 'the scrapes above ran')
  const dashboard = JSON.parse(readFileSync(new URL('grafana-dashboard.json', DEPLOY), 'utf8')) as { uid: string, panels: Array<{ type: string, title: string, targets?: Array<{ expr: string }> }> }
  t.equal(dashboard.uid, 'assisted-image-service')
  const queries = dashboard.panels.flatMap(p => (p.targets ?? []).map(target => ({ where: `panel "${p.title}"`, expr: target.expr })))
  t.ok(queries.length >= 15, `${queries.length} dashboard queries`)
  const rule = parse(readFileSync(new URL('prometheus-rule.yaml', DEPLOY), 'utf8')) as { spec: { groups: Array<{ rules: Array<{ alert: string, expr: string }> }> } }
  queries.push(...rule.spec.groups.flatMap(g => g.rules.map(r => ({ where: `alert ${r.alert}`, expr: r.expr }))))
  for (const { where, expr } of queries) {
    const names = metricsOf(expr)
    t.ok(names.length > 0, `${where} reads a metric of the service`)
    for (const name of names) t.ok(seen.has(name), `${where}: ${name} is exposed`)
  }
})

t.test('the ServiceMonitor selects the Service of deploy/kubernetes.yaml and scrapes its port', async t => {
  const docs = parseAllDocuments(readFileSync(new URL('../kubernetes.yaml', DEPLOY), 'utf8')).map(d => d.toJS() as { kind: string, metadata: { labels?: Record<string, string> }, spec: { ports?: Array<{ name: string }> } })
  const service = docs.find(d => d.kind === 'Service')!
  const monitor = parse(readFileSync(new URL('service-monitor.yaml', DEPLOY), 'utf8')) as { kind: string, spec: { selector: { matchLabels: Record<string, string> }, endpoints: Array<{ port: string, path: string }> } }
  t.equal(monitor.kind, 'ServiceMonitor')
  t.match(service.metadata.labels, monitor.spec.selector.matchLabels, 'the selector matches the Service\'s labels')
  for (const endpoint of monitor.spec.endpoints) {
    t.ok(service.spec.ports?.some(p => p.name === endpoint.port), `port ${endpoint.port} is a named port of the Service`)
    t.equal(endpoint.path, '/metrics')
  }
})
