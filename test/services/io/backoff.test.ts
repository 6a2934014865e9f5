import t from 'tap'
import { backoffDelay, sleep } from '../../../services/io/backoff.ts'

t.test('doubles from the base, caps, and jitters downwards only within the range', async t => {
  const random = Math.random
  t.teardown(() => { Math.random = random })
  const backoff = { baseMs: 1000, maxMs: 30_000, jitter: 0.5 }
  Math.random = () => 0.999999
  t.equal(Math.round(backoffDelay(1, backoff)), 1000)
  t.equal(Math.round(backoffDelay(3, backoff)), 4000)
  t.equal(Math.round(backoffDelay(10, backoff)), 30_000, 'capped')
  Math.random = () => 0
  t.equal(backoffDelay(3, backoff), 2000, 'half of it at the least')
  t.equal(backoffDelay(3, { ...backoff, jitter: 0.25 }), 3000, 'three quarters with a quarter of jitter')
  t.equal(backoffDelay(3, { ...backoff, jitter: 0 }), 4000)
})

t.test('sleep waits, or ends with the abort reason and leaves no listener', async t => {
  const started = Date.now()
  await sleep(30)
  t.ok(Date.now() - started >= 25)
  const controller = new AbortController()
  const waiting = sleep(60_000, controller.signal)
  controller.abort(new Error('closing'))
  await t.rejects(waiting, /closing/)
  const kept = new AbortController()
  let added = 0
  let removed = 0
  const add = kept.signal.addEventListener.bind(kept.signal)
  const remove = kept.signal.removeEventListener.bind(kept.signal)
  kept.signal.addEventListener = (...args: Parameters<typeof add>) => { added++; add(...args) }
  kept.signal.removeEventListener = (...args: Parameters<typeof remove>) => { removed++; remove(...args) }
  await sleep(5, kept.signal)
  t.same([added, removed], [1, 1])
})
