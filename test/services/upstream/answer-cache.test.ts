import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { AnswerCache } from '../../../services/upstream/answer-cache.ts'
import { LocalInfraEnvSource } from '../../../services/upstream/local-source.ts'
import { parseKernelArguments } from '../../../services/upstream/infra-env-source.ts'

t.test('coalesces concurrent calls, caches for the TTL, never caches failures', async t => {
  const cache = new AnswerCache<string>(100, 1 << 20)
  let calls = 0
  const load = async () => { calls++; await sleep(20); return `answer ${calls}` }
  const answers = await Promise.all(Array.from({ length: 10 }, () => cache.get('k', load, v => v.length)))
  t.equal(calls, 1, 'ten concurrent callers, one load')
  t.same(new Set(answers.map(a => a.value)), new Set(['answer 1']))
  t.equal(answers.filter(a => a.hit).length, 9)
  t.equal((await cache.get('k', load, v => v.length)).hit, true, 'cached')
  await sleep(120)
  t.equal((await cache.get('k', load, v => v.length)).value, 'answer 2', 'expired after the TTL')

  let failures = 0
  const failing = async () => { failures++; throw new Error('upstream down') }
  await t.rejects(cache.get('f', failing, () => 0), /upstream down/)
  await t.rejects(cache.get('f', failing, () => 0), /upstream down/)
  t.equal(failures, 2, 'a failure is not cached')
})

t.test('bounded by bytes, oldest evicted; TTL 0 still coalesces but keeps nothing', async t => {
  const cache = new AnswerCache<Buffer>(60_000, 1000)
  for (const key of ['a', 'b', 'c']) await cache.get(key, async () => Buffer.alloc(400), b => b.length)
  t.ok(cache.bytes <= 1000)
  t.equal((await cache.get('a', async () => Buffer.alloc(1), b => b.length)).hit, false, 'the oldest entry went first')
  const off = new AnswerCache<string>(0, 1000)
  let loads = 0
  const slow = async () => { loads++; await sleep(10); return 'x' }
  await Promise.all([off.get('k', slow, () => 1), off.get('k', slow, () => 1)])
  await off.get('k', slow, () => 1)
  t.equal(loads, 2, 'coalesced, then not cached')
})

t.test('the shared call is aborted only when every caller has left', async t => {
  const cache = new AnswerCache<string>(1000, 1000)
  let aborted = false
  const load = (signal: AbortSignal) => new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => resolve('done'), 200)
    signal.addEventListener('abort', () => { aborted = true; clearTimeout(timer); reject(new Error('aborted')) })
  })
  const a = new AbortController()
  const b = new AbortController()
  const first = cache.get('k', load, () => 1, a.signal)
  const second = cache.get('k', load, () => 1, b.signal)
  a.abort(new Error('client a left'))
  await t.rejects(first, /client a left/)
  await sleep(10)
  t.equal(aborted, false, 'b still waits')
  b.abort(new Error('client b left'))
  await t.rejects(second, /client b left/)
  await sleep(10)
  t.equal(aborted, true, 'nobody waits: the upstream call is cancelled')
})

t.test('local InfraEnv directory', async t => {
  const dir = t.testdir({
    'abc-1': { 'discovery.ign': '{"ignition":{}}', 'infra-env.json': JSON.stringify({ kernel_arguments: '[{"operation":"append","value":"a=b"}]' }) },
    'abc-2': { 'discovery.ign': '{}', 'minimal-initrd.img': 'RAMDISK' }
  })
  const source = new LocalInfraEnvSource(dir)
  t.equal((await source.ignition('abc-1', 'full-iso', undefined)).data.toString(), '{"ignition":{}}')
  t.ok((await source.ignition('abc-1', undefined, undefined)).lastModified instanceof Date)
  t.same(await source.kernelArguments('abc-1'), ['a=b'])
  t.equal(await source.ramdisk('abc-1'), undefined, 'no ramdisk file: no ramdisk')
  t.equal((await source.ramdisk('abc-2'))?.toString(), 'RAMDISK')
  t.same(await source.kernelArguments('abc-2'), [], 'no infra-env.json: no kargs')
  await t.rejects(source.ignition('missing', undefined, undefined), { code: 'INFRA_ENV_NOT_FOUND' })
  await t.rejects(source.ignition('../etc', undefined, undefined), { code: 'INFRA_ENV_NOT_FOUND' }, 'no path traversal')
})

t.test('kernel_arguments parsing', async t => {
  t.same(parseKernelArguments(null), [])
  t.same(parseKernelArguments(undefined), [])
  t.same(parseKernelArguments('[{"operation":"append","value":" ip=dhcp "}]'), ['ip=dhcp'])
  t.throws(() => parseKernelArguments('[{"operation":"delete","value":"x"}]'), { code: 'UPSTREAM_BAD_KARGS' })
  t.throws(() => parseKernelArguments('{"operation":"append"}'), { code: 'UPSTREAM_BAD_KARGS' })
  t.throws(() => parseKernelArguments('[{"operation":"append","value":"a\\nb"}]'), { code: 'UPSTREAM_BAD_KARGS' })
  t.throws(() => parseKernelArguments(['x']), { code: 'UPSTREAM_BAD_KARGS' })
})
