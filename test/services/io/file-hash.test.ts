import t from 'tap'
import { createHash } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileSha256 } from '../../../services/io/file-hash.ts'

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

t.test('hashes a whole file across chunks, or its first bytes', async t => {
  const dir = t.testdir()
  const data = Buffer.alloc(3 * (1 << 20) + 12345)
  for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff
  const path = join(dir, 'data.bin')
  await writeFile(path, data)
  t.equal(await fileSha256(path), sha256(data))
  t.equal(await fileSha256(path, 1000), sha256(data.subarray(0, 1000)))
  const empty = join(dir, 'empty')
  await writeFile(empty, '')
  t.equal(await fileSha256(empty), sha256(Buffer.alloc(0)))
})

t.test('a file shorter than asked is an error', async t => {
  const path = join(t.testdir(), 'short')
  await writeFile(path, 'abc')
  await t.rejects(fileSha256(path, 10), /short ended early/)
  await t.rejects(fileSha256(join(path, '..', 'missing')), { code: 'ENOENT' })
})
