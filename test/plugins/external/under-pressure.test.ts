// Event-loop delay sheds what is not an image; image requests (a BMC mid-mount) are answered late rather than
// refused. The heap threshold still sheds everything but the probes. Over real HTTP on 127.0.0.1.
import t from 'tap'
import type { FastifyInstance } from 'fastify'
import { routeIsos, startService, X86_VERSION } from '../../fixtures/service.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')
const THRESHOLD_MS = 20
const isos = await routeIsos(t.testdir())

/** Blocks this process's event loop until under-pressure's sampled delay is over the threshold. */
async function delayTheLoop (app: FastifyInstance): Promise<void> {
  for (let i = 0; i < 10 && !(app.memoryUsage().eventLoopDelay > THRESHOLD_MS); i++) {
    const until = Date.now() + 1500
    while (Date.now() < until) { /* a stall like a synchronous gzip of nmstatectl */ }
    for (let j = 0; j < 60 && !(app.memoryUsage().eventLoopDelay > THRESHOLD_MS); j++) await new Promise(resolve => setTimeout(resolve, 10))
  }
}

interface Seen { status: number, code?: string }

async function seen (res: Response): Promise<Seen> {
  const text = await res.text()
  return res.status === 503 ? { status: 503, code: (JSON.parse(text) as { code: string }).code } : { status: res.status }
}

const imageUrls = [
  `/byid/${ID}/${X86_VERSION}/x86_64/minimal.iso`,
  `/images/${ID}/pxe-initrd?version=${X86_VERSION}&arch=x86_64`,
  `/images/${ID}?version=${X86_VERSION}&type=full-iso`,
  `/boot-artifacts/rootfs?version=${X86_VERSION}&arch=x86_64`
]

t.test('MAX_EVENT_LOOP_DELAY_MS: image requests are answered while the loop is delayed, others get 503', async t => {
  const env = { MAX_EVENT_LOOP_DELAY_MS: String(THRESHOLD_MS) }
  const { app, url } = await startService(t, { isos, listen: true, infraEnvs: { [ID]: { ignition: IGNITION } }, env })
  const head = await fetch(`${url}${imageUrls[0]}`, { method: 'HEAD' })
  const short = new URL(/^<([^>]+)>/.exec(head.headers.get('link') ?? '')![1]!).pathname
  // A sample lasts 500 ms: a 404 on each side of the image requests shows the delay was in force for all of them.
  let attempt: { before: Seen, images: Seen[], after: Seen } | undefined
  for (let i = 0; i < 5; i++) {
    await delayTheLoop(app)
    const before = await seen(await fetch(`${url}/nowhere`))
    const images = []
    for (const path of [...imageUrls, short]) images.push(await seen(await fetch(`${url}${path}`, { headers: { range: 'bytes=0-0' } })))
    const after = await seen(await fetch(`${url}/nowhere`))
    attempt = { before, images, after }
    if (before.status === 503 && after.status === 503) break
  }
  t.same(attempt?.before, { status: 503, code: 'UNDER_PRESSURE' }, 'an unknown route is shed')
  t.same(attempt?.after, { status: 503, code: 'UNDER_PRESSURE' }, 'and still is after the image requests')
  t.same(attempt?.images, Array.from({ length: 5 }, () => ({ status: 206 })), 'ISO, PXE initrd, long form, boot artifact and short link: all answered')
  t.equal((await fetch(`${url}/health`)).status, 200, 'probes too')
})

t.test('MAX_HEAP_USED_BYTES still sheds image requests, also while the loop is delayed', async t => {
  const { app, url } = await startService(t, { isos, listen: true, infraEnvs: { [ID]: { ignition: IGNITION } }, env: { MAX_EVENT_LOOP_DELAY_MS: String(THRESHOLD_MS), MAX_HEAP_USED_BYTES: '1' } })
  await delayTheLoop(app)
  const res = await fetch(`${url}${imageUrls[0]}`, { headers: { range: 'bytes=0-0' } })
  t.same(await seen(res), { status: 503, code: 'UNDER_PRESSURE' })
  t.equal(res.headers.get('retry-after'), '10')
  t.equal((await fetch(`${url}/live`)).status, 200)
})
