// An image whose bytes cannot be served (here: not an ISO at all) is refused once, named in /health and counted,
// and never retried, while the other images serve: in one process and behind two workers.
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { buildSyntheticIso } from '../../services/coreos/synthetic-iso.ts'
import { build, freePort } from '../helper.ts'
import { startServerProcess, untilHealthy } from '../fixtures/server-process.ts'

const VERSION = '418.94.202501221327-0'
const REFUSED_KEY = `${VERSION}@ppc64le@full-iso`

async function images (dir: string): Promise<string> {
  mkdirSync(`${dir}/iso`, { recursive: true })
  mkdirSync(`${dir}/infra-envs`, { recursive: true })
  const good = await buildSyntheticIso({ dir: `${dir}/iso`, volumeId: `rhcos-${VERSION}` })
  writeFileSync(`${dir}/iso/broken.iso`, Buffer.alloc(1 << 20, 0x5a))
  return JSON.stringify([
    { openshift_version: '4.17', cpu_architecture: 'x86_64', url: `file://${good}`, version: VERSION },
    { openshift_version: '4.17', cpu_architecture: 'ppc64le', url: `file://${dir}/iso/broken.iso`, version: VERSION }
  ])
}

t.test('one process: refused once, listed in /health, counted, the other image serves', async t => {
  const dir = t.testdir()
  const { app, logs } = await build(t, { OS_IMAGES: await images(dir), INFRAENVS_DIR: `${dir}/infra-envs`, MAX_EVENT_LOOP_DELAY_MS: '0' }, { app: { imageStore: { timing: { retryBaseMs: 20 } } } })
  await app.ready()
  await app.imageStore.settled()
  await new Promise(resolve => setTimeout(resolve, 200))
  const health = await app.inject('/health')
  t.equal(health.statusCode, 200, 'the pod stays in rotation for the image that serves')
  const body = health.json() as { refused?: Array<{ image: string, reason: string }> }
  t.same(body.refused?.map(r => r.image), [REFUSED_KEY])
  t.match(body.refused?.[0]?.reason, /volume descriptor|ISO 9660|CD001/i, 'with the reason')
  const records = logs.records()
  t.equal(records.filter(r => r.msg === 'OS image refused: it cannot be served as it is; the other images serve').length, 1, 'logged once, at error, naming the image')
  t.equal(records.filter(r => r.msg === 'OS image not ready, will retry').length, 0, 'never retried')
  const metrics = (await app.inject('/metrics')).body
  t.match(metrics, `assisted_image_service_os_image_refused{version="${VERSION}",arch="ppc64le"} 1`)
  t.match(metrics, `assisted_image_service_os_image_refused{version="${VERSION}",arch="x86_64"} 0`)
  t.equal((await app.inject(`/boot-artifacts/kernel?version=${VERSION}&arch=x86_64`)).statusCode, 200, 'the other image serves')
  t.equal((await app.inject(`/boot-artifacts/kernel?version=${VERSION}&arch=ppc64le`)).statusCode, 503, 'the refused one answers as not ready')
})

t.test('two workers: the primary refuses, the workers follow it', async t => {
  const dir = t.testdir()
  const port = await freePort()
  const server = startServerProcess(t, port, { WORKERS: '2', DATA_DIR: `${dir}/data`, LOG_LEVEL: 'info', MAX_EVENT_LOOP_DELAY_MS: '0', OS_IMAGES: await images(dir), INFRAENVS_DIR: `${dir}/infra-envs` }, dir)
  const { base, child, output } = server
  const health = await untilHealthy(server)
  t.equal(health, 200, `ready behind two workers${health === 200 ? '' : `; output:\n${output().slice(-2000)}`}`)
  for (let i = 0; i < 6; i++) {
    const body = await (await fetch(`${base}/health`, { headers: { connection: 'close' } })).json() as { refused?: Array<{ image: string }> }
    t.same(body.refused?.map(r => r.image), [REFUSED_KEY], 'every worker lists the refused image')
  }
  t.match(await (await fetch(`${base}/metrics`, { headers: { connection: 'close' } })).text(), `assisted_image_service_os_image_refused{version="${VERSION}",arch="ppc64le"} 1`)
  t.equal((await fetch(`${base}/boot-artifacts/kernel?version=${VERSION}&arch=x86_64`, { method: 'HEAD', headers: { connection: 'close' } })).status, 200)
  t.equal(output().split('\n').filter(l => l.includes('OS image refused')).length, 1, 'refused once, by the primary')
  child.kill('SIGTERM')
  await server.exited
})
