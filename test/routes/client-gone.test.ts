// A client that leaves before its answer (while assisted-service is asked, or while queued for a slot) is
// ordinary, not an error: one info line without a stack, and a request line with nginx's 499.
import t, { type Test } from 'tap'
import { request } from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import type { LogCapture } from '../helper.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'

const SLOW = '11111111-1111-4111-8111-111111111111'
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"}}')
const isos = await routeIsos(t.testdir())

function leaveLater (url: string) {
  const req = request(url)
  req.on('error', () => {})
  req.end()
  return req
}

async function until (check: () => boolean): Promise<void> {
  for (let i = 0; i < 250 && !check(); i++) await sleep(20)
}

/** The log records of the request whose URL contains `marker`, once its request line is written. */
async function recordsOf (logs: LogCapture, marker: string): Promise<Array<Record<string, unknown>>> {
  const line = () => logs.records().find(r => r.msg === 'request' && String(r.url).includes(marker))
  await until(() => line() !== undefined)
  const reqId = line()?.reqId
  return logs.records().filter(r => r.reqId === reqId)
}

function checkLogged (t: Test, records: Array<Record<string, unknown>>, logs: LogCapture): void {
  t.match(records.find(r => r.msg === 'client disconnected before the response'), { level: 30, code: 'CLIENT_GONE' }, 'one info line')
  t.notOk(records.some(r => 'err' in r || 'stack' in r), 'no stack')
  t.match(records.find(r => r.msg === 'request'), { level: 30, status: 499, aborted: true }, 'the request line: 499, at info')
  t.same(logs.records().filter(r => Number(r.level) >= 40).map(r => r.msg), [], 'nothing at warn or error')
}

t.test('a client that leaves during the call to assisted-service', async t => {
  const { upstream, url, logs } = await startService(t, { isos, listen: true, infraEnvs: { [SLOW]: { ignition: IGNITION, delayMs: 3000 } } })
  const req = leaveLater(`${url}/images/${SLOW}/pxe-initrd?version=${X86_VERSION}&arch=x86_64`)
  await until(() => upstream.calls.length > 0)
  req.destroy()
  checkLogged(t, await recordsOf(logs, SLOW), logs)
  await until(() => upstream.calls.every(c => c.closedEarly))
  t.ok(upstream.calls.every(c => c.closedEarly), 'the upstream call is cancelled')
})

t.test('a client that leaves while queued for a slot', async t => {
  const QUEUED = '22222222-2222-4222-8222-222222222222'
  const { upstream, url, logs } = await startService(t, {
    isos,
    listen: true,
    env: { MAX_CONCURRENT_REQUESTS: '1' },
    infraEnvs: { [SLOW]: { ignition: IGNITION, delayMs: 3000 }, [QUEUED]: { ignition: IGNITION } }
  })
  const holder = leaveLater(`${url}/byid/${SLOW}/${X86_VERSION}/x86_64/minimal.iso`)
  await until(() => upstream.calls.length > 0)
  const queued = leaveLater(`${url}/byid/${QUEUED}/${X86_VERSION}/x86_64/minimal.iso`)
  await sleep(200)
  t.notOk(upstream.calls.some(c => c.path.includes(QUEUED)), 'the second request waits for the slot')
  queued.destroy()
  checkLogged(t, await recordsOf(logs, QUEUED), logs)
  holder.destroy()
})
