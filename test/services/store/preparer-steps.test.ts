// The steps ImagePreparer composes, each alone: content id, the ISO file, the nmstatectl cache.
import t from 'tap'
import { createHash } from 'node:crypto'
import { existsSync, readFileSync, utimesSync, writeFileSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { buildSyntheticIso } from '../../../services/coreos/synthetic-iso.ts'
import { contentId, saveContentId, savedContentId } from '../../../services/store/content-id.ts'
import { openValidIso } from '../../../services/store/iso-file.ts'
import { extractedNmstate, leadersNmstate } from '../../../services/store/nmstate-cache.ts'
import { isNmstateArchiveOf } from '../../../services/store/nmstate.ts'
import { nmstateArchiveFileName, nmstatectlFileName, type OsImageEntry } from '../../../services/store/os-image-entry.ts'
import type { StoreLog } from '../../../services/store/store-types.ts'
import type { FileIdentity } from '../../../services/iso9660/reader.ts'

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex')

function recorder (): { log: StoreLog, lines: Array<{ level: string, msg: string }> } {
  const lines: Array<{ level: string, msg: string }> = []
  const push = (level: string) => (_obj: object, msg: string) => { lines.push({ level, msg }) }
  return { log: { info: push('info'), warn: push('warn'), error: push('error') }, lines }
}

async function identity (path: string): Promise<FileIdentity> {
  const info = await stat(path)
  return { path, size: info.size, mtimeMs: info.mtimeMs, ino: info.ino, dev: info.dev }
}

t.test('content id: hashed once and saved, read back while the file is unchanged, hashed again once it changes', async t => {
  const dir = t.testdir({ 'image.iso': 'first content' })
  const iso = join(dir, 'image.iso')
  const sidecar = join(dir, 'image.iso.sha256')
  const { log, lines } = recorder()
  t.equal(await savedContentId(sidecar, await identity(iso)), undefined, 'no sidecar yet')
  t.notOk(existsSync(sidecar), 'reading writes nothing')

  t.equal(await contentId(await identity(iso), sidecar, { log, key: 'k' }), sha256('first content'))
  t.same(lines.map(l => l.msg), ['OS image content hashed'])
  t.equal(await savedContentId(sidecar, await identity(iso)), sha256('first content'), 'a follower reads the sidecar')
  t.equal(await contentId(await identity(iso), sidecar, { log, key: 'k' }), sha256('first content'))
  t.equal(lines.length, 1, 'not hashed again')

  writeFileSync(iso, 'other content')
  utimesSync(iso, new Date(), new Date(Date.now() + 5000))
  t.equal(await savedContentId(sidecar, await identity(iso)), undefined, 'a sidecar of another size or mtime describes another file')
  t.equal(await contentId(await identity(iso), sidecar, { log, key: 'k' }), sha256('other content'))

  writeFileSync(sidecar, JSON.stringify({ sha256: 'not a hash', ...await identity(iso) }))
  t.equal(await savedContentId(sidecar, await identity(iso)), undefined, 'a malformed hash is ignored')
  writeFileSync(sidecar, '{')
  t.equal(await savedContentId(sidecar, await identity(iso)), undefined, 'so is a torn file')
  await saveContentId(sidecar, iso, 'a'.repeat(64))
  t.equal(await savedContentId(sidecar, await identity(iso)), 'a'.repeat(64))
})

t.test('the ISO file: missing, valid, or invalid (deleted only when ours)', async t => {
  const dir = t.testdir({ 'broken.iso': 'not an ISO at all' })
  const { log, lines } = recorder()
  t.equal(await openValidIso(join(dir, 'missing.iso'), { log, key: 'k', deleteInvalid: true }), undefined)

  const path = await buildSyntheticIso({ dir, volumeId: 'rhcos-419.96.202506010000-0' })
  const iso = await openValidIso(path, { log, key: 'k', deleteInvalid: false })
  t.ok(iso, 'a valid ISO opens')
  await iso!.close()

  const broken = join(dir, 'broken.iso')
  await t.rejects(openValidIso(broken, { log, key: 'k', deleteInvalid: false }), 'not ours: the reason, and the file stays')
  t.ok(existsSync(broken))
  t.equal(await openValidIso(broken, { log, key: 'k', deleteInvalid: true }), undefined)
  t.notOk(existsSync(broken), 'ours: deleted, to be downloaded again')
  t.same(lines.map(l => l.level), ['warn'])
})

const ELF = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]), Buffer.alloc(64, 7)])
const entry: OsImageEntry = { openshiftVersion: '4.19.0', cpuArchitecture: 'x86_64', version: '419.96.1', type: 'full-iso', url: 'https://mirror/x.iso' }
const noRootfs = { kernelName: 'vmlinuz' }

t.test('nmstatectl cache: a cached ELF binary is used, and its archive saved for the workers', async t => {
  const dataDir = t.testdir()
  writeFileSync(join(dataDir, nmstatectlFileName(entry)), ELF)
  const { log, lines } = recorder()
  const primary = await extractedNmstate(entry, 'k', noRootfs, { dataDir, log })
  t.equal(primary.nmstateError, undefined)
  t.ok(await isNmstateArchiveOf(primary.nmstateArchive!, ELF), 'the archive holds the cached binary')
  const saved = readFileSync(join(dataDir, nmstateArchiveFileName(entry)))
  t.ok(saved.equals(primary.nmstateArchive!), 'saved in DATA_DIR')
  t.same(lines.map(l => l.msg), ['nmstatectl archive compressed'])

  const worker = await leadersNmstate(entry, 'k', { dataDir, log, leader: { nmstateError: () => undefined } })
  t.ok(worker.nmstateArchive!.equals(saved), 'a worker takes the saved archive')
  t.equal(lines.length, 1, 'without compressing it again')
})

t.test('nmstatectl cache: what is not an ELF binary is not used', async t => {
  const dataDir = t.testdir()
  writeFileSync(join(dataDir, nmstatectlFileName(entry)), '#!/bin/sh\n')
  const { log, lines } = recorder()
  const primary = await extractedNmstate(entry, 'k', noRootfs, { dataDir, log })
  t.same(primary, { nmstateError: 'the ISO has no images/pxeboot/rootfs.img' }, 'extracted again, from a rootfs this ISO lacks')
  t.same(lines.map(l => l.level), ['warn', 'error'])

  t.same(await leadersNmstate(entry, 'k', { dataDir, log, leader: { nmstateError: () => 'no nmstatectl binary in the squashfs root filesystem' } }),
    { nmstateError: 'no nmstatectl binary in the squashfs root filesystem' }, 'a worker gives the primary\'s reason')
  t.same(await leadersNmstate(entry, 'k', { dataDir, log, leader: { nmstateError: () => undefined } }),
    { nmstateError: 'the primary process left no nmstatectl in DATA_DIR' })
  t.notOk(existsSync(join(dataDir, nmstateArchiveFileName(entry))), 'no archive without a binary')
})
