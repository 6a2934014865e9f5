import t from 'tap'
import { closeSync, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs'
import { IsoImage } from '../../../services/iso9660/reader.ts'
import { IsoFormatError } from '../../../services/errors.ts'
import { goldenIsos } from '../../fixtures/iso-report.ts'

/** Small deterministic PRNG so a failure can be replayed. */
function prng (seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let x = s
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32
  }
}

t.test('the reader survives thousands of byte flips and truncations', async t => {
  const dir = t.testdir()
  const isos = goldenIsos(dir)
  const random = prng(20261121)
  let formatErrors = 0
  let opened = 0
  let iterations = 0
  let largestMetadataRead = 0
  for (const name of ['embed-areas-2023-07.x86_64', 'embed-areas-2023-07.s390x', 'synthetic', 'embed-areas-2021-01']) {
    const path = isos.get(name)!
    const original = readFileSync(path)
    // Metadata lives in the first sectors: system area, descriptors, path tables, directories.
    const hot = Math.min(original.length, 80 * 2048)
    const fd = openSync(path, 'r+')
    try {
      for (let i = 0; i < 700; i++, iterations++) {
        const truncate = random() < 0.15
        const flips: Array<[number, number]> = []
        if (truncate) {
          ftruncateSync(fd, Math.floor(random() * hot))
        } else {
          const count = 1 + Math.floor(random() * 8)
          for (let f = 0; f < count; f++) {
            const at = Math.floor(random() * hot)
            flips.push([at, original[at]!])
            const value = random() < 0.5 ? Math.floor(random() * 256) : original[at]! ^ (1 << Math.floor(random() * 8))
            writeSync(fd, Buffer.from([value]), 0, 1, at)
          }
        }
        try {
          const image = await Promise.race([
            IsoImage.open(path),
            new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error(`hang on ${name} iteration ${i}`)), 2000))
          ])
          largestMetadataRead = Math.max(largestMetadataRead, image.metadataBytesRead)
          await image.readPathTable().catch((err: unknown) => { if (!(err instanceof IsoFormatError)) throw err })
          // Reading every file of whatever tree came out must not misbehave either.
          for (const entry of image.walk()) {
            if (entry.isDirectory || entry.size >= 1 << 20) continue
            await image.readFile(entry).catch((err: unknown) => { if (!(err instanceof IsoFormatError)) throw err })
            image.lookup(entry.path)
          }
          await image.close()
          opened++
        } catch (err) {
          if (!(err instanceof IsoFormatError)) {
            t.fail(`${name} iteration ${i}: ${(err as Error).stack}`)
            return
          }
          formatErrors++
        }
        if (truncate) writeSync(fd, original, 0, original.length, 0)
        else for (const [at, value] of flips.reverse()) writeSync(fd, Buffer.from([value]), 0, 1, at)
      }
    } finally {
      closeSync(fd)
    }
  }
  t.equal(iterations, 2800)
  t.ok(formatErrors > 100, `${formatErrors} mutations were rejected with IsoFormatError`)
  t.ok(opened > 100, `${opened} mutations still parsed`)
  t.ok(largestMetadataRead < 8 << 20, `metadata reads stayed small (${(largestMetadataRead / 1048576).toFixed(2)} MiB at most)`)
})
