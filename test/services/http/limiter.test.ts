import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { ConcurrencyLimiter } from '../../../services/http/limiter.ts'
import { QueueTimeout, type DomainError } from '../../../services/errors.ts'

t.test('grants up to max slots, then queues in FIFO order', async t => {
  const limiter = new ConcurrencyLimiter(2, 10_000)
  const a = await limiter.acquire()
  await limiter.acquire()
  const order: string[] = []
  const c = limiter.acquire().then(release => { order.push('c'); return release })
  const d = limiter.acquire().then(release => { order.push('d'); return release })
  await sleep(10)
  t.equal(limiter.active, 2)
  t.equal(limiter.queued, 2)
  t.same(order, [])
  a()
  a() // releasing twice frees one slot only
  const releaseC = await c
  t.same(order, ['c'])
  t.equal(limiter.queued, 1)
  releaseC()
  await d
  t.same(order, ['c', 'd'])
  t.equal(limiter.active, 2)
})

t.test('a waiter times out with QUEUE_TIMEOUT', async t => {
  const limiter = new ConcurrencyLimiter(1, 50)
  await limiter.acquire()
  const err = await limiter.acquire().catch((e: unknown) => e) as DomainError
  t.type(err, QueueTimeout)
  t.equal(err.code, 'QUEUE_TIMEOUT')
  t.equal(limiter.queued, 0)
})

t.test('an aborted waiter leaves the queue at once', async t => {
  const limiter = new ConcurrencyLimiter(1, 10_000)
  const release = await limiter.acquire()
  const ac = new AbortController()
  const waiting = limiter.acquire(ac.signal)
  t.equal(limiter.queued, 1)
  ac.abort(new Error('gone'))
  await t.rejects(waiting, { message: 'gone' })
  t.equal(limiter.queued, 0)
  release()
  t.equal(limiter.active, 0)
})
