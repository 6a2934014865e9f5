import t from 'tap'
import module from 'node:module'
import { readFileSync } from 'node:fs'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'

// As on a platform koffi ships no binary for (s390x): the FFI cannot load, and the service reads its files.
module.registerHooks({
  resolve (specifier, context, nextResolve) {
    if (specifier === 'koffi') throw new Error('Cannot find native Koffi module (no prebuilt binary for this platform)')
    return nextResolve(specifier, context)
  }
})

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const isos = await routeIsos(t.testdir())

t.test('without the FFI the fallback is taken, said once, and serves the same bytes', async t => {
  const { url, logs } = await startService(t, { isos, listen: true, infraEnvs: { [ID]: { ignition: Buffer.from('{"ignition":{"version":"3.2.0"}}') } } })
  const warnings = logs.records().filter(r => r.msg === 'memory maps are unavailable; image files are read into buffers')
  t.equal(warnings.length, 1, 'one warning at start-up')
  t.match(warnings[0]!.error, /no prebuilt binary/, 'naming why')
  t.notOk(readFileSync('/proc/self/maps', 'utf8').includes(isos.x86), 'nothing is mapped')
  const res = await fetch(`${url}/byid/${ID}/${X86_VERSION}/x86_64/full.iso`, { headers: { range: 'bytes=32768-32773' } })
  t.equal(res.status, 206)
  t.equal(Buffer.from(await res.arrayBuffer()).toString('latin1', 1, 6), 'CD001', 'the primary volume descriptor, read from the file')
})
