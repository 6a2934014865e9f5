import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ImageWriter } from '../../../services/compose/image-writer.ts'
import { buildSyntheticIso } from '../../../services/coreos/synthetic-iso.ts'
import { ImageStore } from '../../../services/store/image-store.ts'
import type { StoreFollower } from '../../../services/store/store-types.ts'
import { contentIdFileName } from '../../../services/store/os-image-entry.ts'
import { filesArchive } from '../../../services/coreos/ignition-archive.ts'
import { readInitrd } from '../../fixtures/initrd-reader.ts'
import { IsoImage } from '../../../services/iso9660/reader.ts'
import { liveRootfsImg, REPO_ROOTFS, SHARED_FIXTURES, sharedFiles, sharedSkip, unpackXz } from '../../fixtures/rootfs-images.ts'
import { NMSTATECTL_PATH, writeRootfsTree } from '../../fixtures/rootfs-tree.ts'

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

async function storeFor (t: Test, dir: string, iso: string, openshiftVersion: string, version: string, follower?: StoreFollower) {
  mkdirSync(join(dir, 'data'), { recursive: true })
  const logs: Array<{ level: string, msg: string, obj: object }> = []
  const store = new ImageStore({
    config: {
      dataDir: join(dir, 'data'),
      dataTempDir: join(dir, 'data/tmp'),
      imageServiceBaseUrl: 'http://h',
      osImagesRequestHeaders: {},
      osImagesRequestQueryParams: {},
      insecureSkipVerify: false,
      proxy: {},
      osImages: [{ openshiftVersion, cpuArchitecture: 'x86_64', version, type: 'full-iso', url: `file://${iso}` }]
    },
    log: {
      info: (obj, msg) => logs.push({ level: 'info', msg, obj }),
      warn: (obj, msg) => logs.push({ level: 'warn', msg, obj }),
      error: (obj, msg) => logs.push({ level: 'error', msg, obj })
    },
    timing: { retryBaseMs: 50 },
    ...(follower !== undefined ? { follower } : {})
  })
  t.teardown(() => store.close())
  await store.start()
  await store.settled()
  return { store, logs, prepared: store.get(`${version}@x86_64@full-iso`) }
}

/** What one image-customizing path delivers: the member usr/bin/nmstatectl of a gzip cpio. */
function nmstatectlMember (archive: Buffer) {
  return readInitrd(archive).find(e => e.name === 'usr/bin/nmstatectl')
}

t.test('nmstatectl comes out of a real-layout rootfs in-process, with no unsquashfs, dump.erofs or xz on PATH', async t => {
  const tree = writeRootfsTree(join(t.testdir(), 'tree'))
  const expected = tree.find(e => e.path === NMSTATECTL_PATH)!
  for (const image of ['tiny-fcos.erofs', 'tiny-rhcos.squashfs']) {
    const dir = t.testdir()
    const version = image.includes('erofs') ? '419.96.202506010000-0' : '419.94.202506010000-0'
    const iso = await buildSyntheticIso({ dir, volumeId: `rhcos-${version}`, rootfsFile: liveRootfsImg(join(dir, 'rootfs.img'), join(REPO_ROOTFS, image)) })
    const path = process.env.PATH
    process.env.PATH = join(dir, 'empty-path')
    let result: Awaited<ReturnType<typeof storeFor>>
    try {
      result = await storeFor(t, dir, iso, '4.19.0', version)
    } finally {
      process.env.PATH = path
    }
    const { prepared, logs } = result
    t.ok(prepared, `${image}: ready`)
    t.equal(prepared!.nmstateError, undefined)
    t.same(logs.filter(l => l.level !== 'info'), [], `${image}: no warnings or errors`)
    t.ok(logs.some(l => l.msg === 'nmstatectl extracted from the live rootfs'), 'the extraction is logged with its time')
    const cached = readFileSync(join(dir, `data/nmstatectl-${version}-x86_64`))
    t.equal(sha256(cached), expected.sha256, `${image}: the binary is cached under the upstream name`)

    const member = nmstatectlMember(prepared!.nmstateArchive!)
    t.equal(member?.mode, 0o100755, `${image}: packaged as usr/bin/nmstatectl, mode 0755`)
    t.equal(sha256(member!.data), expected.sha256)

    const minimalPath = join(dir, 'minimal.iso')
    await new ImageWriter().saveSparse(prepared!.templates['minimal-iso']!.image, minimalPath)
    const minimal = await IsoImage.open(minimalPath)
    const inIso = nmstatectlMember(await minimal.readFile(minimal.lookup('/images/nmstate.img')!))
    t.equal(sha256(inIso!.data), expected.sha256, `${image}: the minimal ISO's /images/nmstate.img carries it`)
    t.match(await minimal.readFile(minimal.lookup('/EFI/redhat/grub.cfg')!), /\/images\/nmstate\.img/, 'and grub loads it as an initrd')
    await minimal.close()
  }
})

t.test('the real-layout rootfs.img fixtures: squashfs zstd/xz/gzip/lz4 and EROFS with the FCOS options', { skip: sharedSkip('rootfs') }, async t => {
  const manifest = JSON.parse(readFileSync(join(SHARED_FIXTURES, 'rootfs/manifest.json'), 'utf8'))
  for (const xz of sharedFiles('rootfs', '.rootfs.img.xz')) {
    const dir = t.testdir()
    const rootfs = unpackXz(xz, dir)
    const padded = join(dir, 'padded-rootfs.img')
    // The store wants a rootfs of 100 MiB or more: append zeros, as real images carry *.osmet members.
    writeFileSync(padded, readFileSync(rootfs))
    const { truncateSync } = await import('node:fs')
    truncateSync(padded, 100 << 20)
    const iso = await buildSyntheticIso({ dir, volumeId: 'rhcos-419.94.1', rootfsFile: padded })
    const { prepared } = await storeFor(t, dir, iso, '4.19', '419.94.1')
    t.equal(sha256(nmstatectlMember(prepared!.nmstateArchive!)!.data), manifest.nmstatectl[0].sha256, `${xz}: right bytes`)
  }
})

t.test('no nmstatectl in the rootfs: the image serves, the reason is kept and logged once at error level', async t => {
  const dir = t.testdir()
  const iso = await buildSyntheticIso({ dir, volumeId: 'rhcos-418.94.10' })
  const { store, prepared, logs } = await storeFor(t, dir, iso, '4.19', '418.94.10')
  t.ok(store.allReady(), 'everything else of the image is ready')
  t.equal(prepared!.nmstateArchive, undefined)
  t.match(prepared!.nmstateError, /squashfs/, 'the reason names what failed')
  const errors = logs.filter(l => l.level === 'error')
  t.equal(errors.length, 1)
  t.match(errors[0]!.msg, /nmstatectl not found/)
  t.match(errors[0]!.obj, { image: '418.94.10@x86_64@full-iso', error: prepared!.nmstateError })
})

t.test('before 4.18 nmstatectl is not looked for', async t => {
  const dir = t.testdir()
  const iso = await buildSyntheticIso({ dir, volumeId: 'rhcos-417.94.1' })
  const { prepared, logs } = await storeFor(t, dir, iso, '4.17', '417.94.1')
  t.equal(prepared!.nmstateArchive, undefined)
  t.equal(prepared!.nmstateError, undefined)
  t.same(logs.filter(l => l.level === 'error'), [])
})

/** A worker's view of a primary that has every image ready, and says why one has no nmstatectl. */
function followerOf (nmstateErrors: Record<string, string> = {}): StoreFollower {
  return {
    ready: async () => {},
    reportPrepared: () => {},
    nmstateError: key => nmstateErrors[key],
    refusal: () => undefined,
    onServing: () => {},
    askForBytes: async () => { throw new Error('this primary keeps whole files only') },
    served: () => {},
    onEvicting: () => {}
  }
}

const CPU_WORK = ['nmstatectl extracted from the live rootfs', 'nmstatectl archive compressed']

t.test('the primary compresses the nmstatectl archive once, into DATA_DIR; workers and restarts read it', async t => {
  const dir = t.testdir()
  const version = '419.96.202506010000-0'
  const iso = await buildSyntheticIso({ dir, volumeId: `rhcos-${version}`, rootfsFile: liveRootfsImg(join(dir, 'rootfs.img')) })
  const archivePath = join(dir, `data/nmstatectl-${version}-x86_64.cpio.gz`)

  const leader = await storeFor(t, dir, iso, '4.19', version)
  const binary = readFileSync(join(dir, `data/nmstatectl-${version}-x86_64`))
  t.same(leader.logs.filter(l => CPU_WORK.includes(l.msg)).map(l => l.msg), CPU_WORK, 'extracted, then compressed')
  const archive = readFileSync(archivePath)
  t.ok(leader.prepared!.nmstateArchive!.equals(archive), 'what it serves is what it saved')
  t.ok(archive.equals(filesArchive([{ name: 'usr/bin/nmstatectl', mode: 0o100755, data: binary }])), 'byte for byte the archive compressed on the event loop before: ETags stay across the upgrade')
  await leader.store.close()

  const worker = await storeFor(t, dir, iso, '4.19', version, followerOf())
  t.ok(worker.prepared!.nmstateArchive!.equals(archive), 'a worker serves the same bytes (one ETag from every worker)')
  t.same(worker.logs.filter(l => CPU_WORK.includes(l.msg) || l.level !== 'info'), [], 'without extracting or compressing anything')
  await worker.store.close()

  const restarted = await storeFor(t, dir, iso, '4.19', version)
  t.same(restarted.logs.filter(l => CPU_WORK.includes(l.msg)), [], 'a restarted primary reuses both caches')
  await restarted.store.close()

  // An archive of another binary (an older cache) is not served: the primary compresses the right one again.
  writeFileSync(archivePath, filesArchive([{ name: 'usr/bin/nmstatectl', mode: 0o100755, data: Buffer.from('\x7fELF stale') }]))
  const stale = await storeFor(t, dir, iso, '4.19', version)
  t.same(stale.logs.filter(l => CPU_WORK.includes(l.msg)).map(l => l.msg), ['nmstatectl archive compressed'])
  t.ok(readFileSync(archivePath).equals(archive), 'and saves it over the stale one')
})

t.test('a worker never searches the rootfs: without the primary\'s nmstatectl it serves the primary\'s reason', async t => {
  const dir = t.testdir()
  const version = '419.96.202506010000-0'
  const key = `${version}@x86_64@full-iso`
  const iso = await buildSyntheticIso({ dir, volumeId: `rhcos-${version}`, rootfsFile: liveRootfsImg(join(dir, 'rootfs.img')) })
  // What the primary leaves beside the ISO before it says ready: its content hash (a worker never hashes).
  mkdirSync(join(dir, 'data'), { recursive: true })
  const { size, mtimeMs } = statSync(iso)
  writeFileSync(join(dir, 'data', contentIdFileName({ type: 'full-iso', version, cpuArchitecture: 'x86_64' })), JSON.stringify({ sha256: sha256(readFileSync(iso)), size, mtimeMs }))
  const { prepared, logs } = await storeFor(t, dir, iso, '4.19', version, followerOf({ [key]: 'squashfs: bad superblock' }))
  t.equal(prepared!.nmstateArchive, undefined, 'no nmstatectl, although this rootfs holds one: the primary found none')
  t.equal(prepared!.nmstateError, 'squashfs: bad superblock', 'the reason /health and the 500 give')
  t.same(logs.filter(l => l.level !== 'info' || CPU_WORK.includes(l.msg)), [], 'nothing extracted, nothing logged twice (the primary logged it)')
})
