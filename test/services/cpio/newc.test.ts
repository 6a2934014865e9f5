import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { gunzipSync } from 'node:zlib'
import { MODE, withParentDirectories, writeNewc, NEWC_HEADER_SIZE, readNewcHeader, writeNewcHeader } from '../../../services/cpio/newc.ts'
import { initrdFiles, readInitrd } from '../../fixtures/initrd-reader.ts'
import { ignitionArchive } from '../../../services/coreos/ignition-archive.ts'
import { decodeXz } from '../../../services/compression/index.ts'
import { GOLDEN_DIR } from '../../fixtures/iso-report.ts'
import { missingTools, run } from '../../fixtures/tools.ts'

t.test('newc writer: GNU cpio lists and extracts what we write', { skip: missingTools('cpio') }, async t => {
  const dir = t.testdir()
  const archive = writeNewc(withParentDirectories([
    { name: 'config.ign', mode: MODE.file | 0o644, data: Buffer.from('{"ignition":{"version":"3.2.0"}}') },
    { name: 'usr/bin/nmstatectl', mode: MODE.file | 0o755, data: Buffer.from('#!/bin/sh\necho hi\n') }
  ]))
  t.equal(archive.length % 4, 0)
  writeFileSync(`${dir}/a.cpio`, archive)
  const listing = run('cpio', ['-itv', '-F', `${dir}/a.cpio`]).split('\n').filter(l => l !== '')
  t.match(listing[0], /^-rw-r--r-- .* config\.ign$/)
  t.match(listing[1], /^drwxr-xr-x .* usr$/)
  t.match(listing[2], /^drwxr-xr-x .* usr\/bin$/)
  t.match(listing[3], /^-rwxr-xr-x .* usr\/bin\/nmstatectl$/)
  run('cpio', ['-idm', '--quiet', '-F', `${dir}/a.cpio`], { cwd: dir })
  t.equal(readFileSync(`${dir}/usr/bin/nmstatectl`, 'utf8'), '#!/bin/sh\necho hi\n')
})

t.test('config.ign archive layout: 124-byte header+name, 284 bytes for a 33-byte config', async t => {
  const config = Buffer.from('{"ignition":{"version":"3.0.0"}}\n')
  t.equal(config.length, 33)
  const cpio = gunzipSync(ignitionArchive(config))
  t.equal(cpio.length, 284)
  t.equal(cpio.toString('latin1', 0, 110), '070701' + '00000001' + '000081a4' + '00000000'.repeat(2) + '00000001' + '00000000' + '00000021' + '00000000'.repeat(4) + '0000000b' + '00000000')
  t.equal(cpio.toString('latin1', 110, 124), 'config.ign\0\0\0\0')
  t.equal(ignitionArchive(config).length % 4, 0, 'the gzip archive is NUL-padded to 4')
})

t.test('reader: golden initrds and GNU cpio agree', { skip: missingTools('cpio') }, async t => {
  for (const name of ['compressed', 'padded-names', 'redundant']) {
    const data = decodeXz(readFileSync(`${GOLDEN_DIR}/initrd/${name}.img.xz`), 1 << 24).data
    const ours = readInitrd(data).map(e => e.name)
    t.ok(ours.length > 0, name)
    // GNU cpio stops at the first trailer; the kernel (and we) read every archive.
    const first = run('cpio', ['-it', '--quiet'], { input: data }).split('\n').filter(l => l !== '')
    if (name !== 'compressed') t.same(ours.slice(0, first.length), first, `${name}: same members as cpio -it`)
    if (name === 'redundant') t.same(ours, [...first, ...first, ...first], 'three concatenated archives')
  }
  const mixed = decodeXz(readFileSync(`${GOLDEN_DIR}/initrd/compressed.img.xz`), 1 << 24).data
  const files = initrdFiles(mixed)
  for (const kind of ['uncompressed-1', 'gzip', 'xz', 'zstd', 'uncompressed-2']) {
    t.ok(files.has(`${kind}/hello`), `${kind} archive read`)
  }
  const redundant = initrdFiles(decodeXz(readFileSync(`${GOLDEN_DIR}/initrd/redundant.img.xz`), 1 << 24).data)
  t.equal(redundant.get('data/file')?.length, 6, 'the last copy of a path wins')
})

t.test('reader rejects path traversal and garbage', async t => {
  t.throws(() => readInitrd(readFileSync(`${GOLDEN_DIR}/initrd/traversal-absolute.img`)), { code: 'CPIO_FORMAT' })
  t.throws(() => readInitrd(readFileSync(`${GOLDEN_DIR}/initrd/traversal-relative.img`)), { code: 'CPIO_FORMAT' })
  t.throws(() => readInitrd(Buffer.from('not an archive')), { code: 'CPIO_FORMAT' })
  t.throws(() => readInitrd(Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8, 9])), { code: 'CPIO_FORMAT' })
  t.throws(() => writeNewc([{ name: '../../evil', mode: MODE.file, data: Buffer.alloc(0) }]), { code: 'CPIO_FORMAT' })
})

t.test('NUL padding between archives is skipped; concatenated gzip members each read', async t => {
  const a = ignitionArchive(Buffer.from('one'))
  const b = ignitionArchive(Buffer.from('two'), [{ name: 'usr/lib/ignition/base.d/extra.ign', mode: MODE.file | 0o644, data: Buffer.from('x') }])
  const initrd = Buffer.concat([writeNewc([{ name: 'etc/x', mode: MODE.file | 0o644, data: Buffer.from('base') }]), Buffer.alloc(8), a, b])
  const files = initrdFiles(initrd)
  t.equal(files.get('etc/x')?.toString(), 'base')
  t.equal(files.get('config.ign')?.toString(), 'two')
  t.equal(files.get('usr/lib/ignition/base.d/extra.ign')?.toString(), 'x')
  t.ok(readInitrd(initrd).some(e => e.name === 'usr/lib/ignition/base.d' && (e.mode & MODE.typeMask) === MODE.directory), 'parent directories come first')
})

t.test('the newc header is read and written by one model', async t => {
  const header = {
    ino: 7,
    mode: MODE.file | 0o644,
    uid: 0,
    gid: 0,
    nlink: 1,
    mtime: 1700000000,
    fileSize: 0x1234,
    devMajor: 0,
    devMinor: 0,
    rdevMajor: 5,
    rdevMinor: 1,
    nameSize: 9,
    check: 0
  }
  const bytes = writeNewcHeader(header, true)
  t.equal(bytes.length, NEWC_HEADER_SIZE)
  t.equal(bytes.toString('latin1', 0, 30), '07070100000007000081A400000000')
  t.same(readNewcHeader(bytes), header)
  t.same(readNewcHeader(Buffer.concat([Buffer.alloc(3), writeNewcHeader(header)]), 3), header, 'at an offset, lower-case hex')
  const bad = Buffer.from(bytes); bad.write('zz', 20, 'latin1')
  t.throws(() => readNewcHeader(bad), { code: 'CPIO_FORMAT', message: /bad header field/ })
  t.throws(() => readNewcHeader(bytes.subarray(0, 100)), { code: 'CPIO_FORMAT', message: /truncated/ })
})
