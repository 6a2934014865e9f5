import t from 'tap'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { syncDirectory, writeAtomically } from '../../../services/io/atomic-write.ts'

t.test('writes data, replacing the old file, and leaves no temporary file', async t => {
  const dir = t.testdir()
  const path = join(dir, 'file')
  await writeAtomically(path, 'first')
  await writeAtomically(path, Buffer.from('second'))
  t.equal(await readFile(path, 'utf8'), 'second')
  t.same(await readdir(dir), ['file'])
  await syncDirectory(dir)
})

t.test('a writer fills the temporary file, beside the target or in tempDir', async t => {
  const dir = t.testdir({ tmp: {} })
  const path = join(dir, 'image.iso')
  const temps: string[] = []
  await writeAtomically(path, async temp => { temps.push(temp); await writeFile(temp, 'one') })
  await writeAtomically(path, async temp => { temps.push(temp); await writeFile(temp, 'two') }, { tempDir: join(dir, 'tmp') })
  t.equal(await readFile(path, 'utf8'), 'two')
  t.match(temps[0], /[/\\]image\.iso\.[0-9a-f]{8}\.part$/)
  t.equal(join(temps[1]!, '..'), join(dir, 'tmp'))
  t.same((await readdir(dir)).sort(), ['image.iso', 'tmp'])
  t.same(await readdir(join(dir, 'tmp')), [])
})

t.test('a failure keeps the old file and removes the temporary one', async t => {
  const dir = t.testdir({ file: 'old' })
  const path = join(dir, 'file')
  await t.rejects(writeAtomically(path, async temp => { await writeFile(temp, 'half'); throw new Error('checksum mismatch') }), /checksum mismatch/)
  t.equal(await readFile(path, 'utf8'), 'old')
  t.same(await readdir(dir), ['file'])
  await mkdir(join(dir, 'blocked'))
  await t.rejects(writeAtomically(join(dir, 'blocked'), 'data'), 'a rename over a directory fails')
  t.same((await readdir(dir)).sort(), ['blocked', 'file'])
})
