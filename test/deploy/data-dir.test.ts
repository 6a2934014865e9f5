// DATA_DIR shared across UIDs as OpenShift shares a volume: through group 0, with the group given the owner's
// permissions. What the service writes as uid 1001 (the downloaded ISO, its sidecar, the nmstatectl files,
// short links and their secret) is group-writable, the short links never anyone else's; a second run as an
// arbitrary UID in group 0 reads all of it and replaces what it must.
import t from 'tap'
import { chownSync, readdirSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildSyntheticIso } from '../../services/coreos/synthetic-iso.ts'
import { filesArchive } from '../../services/coreos/ignition-archive.ts'
import { liveRootfsImg } from '../fixtures/rootfs-images.ts'
import { freePort } from '../helper.ts'
import { startMirror } from '../fixtures/mirror.ts'
import { startServerProcess, untilHealthy, type ServerProcess } from '../fixtures/server-process.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b01'
const VERSION = '418.94.202501221327-0'
const FIRST_UID = 1001
const SECOND_UID = 1000650000

const skip = process.getuid?.() !== 0 ? 'runs the service as other uids: needs root' : false

/** Mode and owner of everything under `dir`, by path relative to it. */
function modes (dir: string): Record<string, { mode: string, uid: number, gid: number }> {
  const found: Record<string, { mode: string, uid: number, gid: number }> = {}
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name)
    const info = statSync(path)
    found[path.slice(dir.length + 1)] = { mode: (info.mode & 0o7777).toString(8).padStart(4, '0'), uid: info.uid, gid: info.gid }
  }
  return found
}

function expectedMode (path: string, isDirectory: boolean): string {
  if (path === 'short-links' || path.startsWith('short-links/')) return isDirectory ? '0770' : '0660'
  return isDirectory ? '0775' : '0664'
}

t.test('DATA_DIR written as uid 1001, then read and replaced as an arbitrary UID in group 0', { skip }, async t => {
  const dir = t.testdir({ mirror: {}, envs: { [ID]: { 'discovery.ign': '{"ignition":{"version":"3.2.0"}}' } }, shared: {} })
  // A static-network ramdisk: the primary then extracts and caches nmstatectl in DATA_DIR.
  writeFileSync(join(dir, 'envs', ID, 'minimal-initrd.img'), filesArchive([{ name: 'etc/assisted/network/host.nmconnection', mode: 0o100600, data: Buffer.from('[connection]\n') }]))
  const iso = await buildSyntheticIso({ dir: join(dir, 'mirror'), volumeId: `rhcos-${VERSION}`, rootfsFile: liveRootfsImg(join(dir, 'mirror', 'rootfs.img')) })
  const mirror = await startMirror(t, { '/rhcos.iso': { path: iso } })
  // The volume: group 0, group-writable, as OpenShift mounts it; the service creates DATA_DIR in it.
  chownSync(join(dir, 'shared'), FIRST_UID, 0)
  const dataDir = join(dir, 'shared', 'data')
  const env = {
    WORKERS: '1',
    LOG_LEVEL: 'info',
    DATA_DIR: dataDir,
    OS_IMAGES: JSON.stringify([{ openshift_version: '4.18', cpu_architecture: 'x86_64', url: `${mirror.url}/rhcos.iso`, version: VERSION }]),
    INFRAENVS_DIR: join(dir, 'envs')
  }
  const run = async (uid: number): Promise<ServerProcess> => {
    const server = startServerProcess(t, await freePort(), env, dir, { uid, gid: 0 })
    t.equal(await untilHealthy(server), 200, `ready as uid ${uid}`, { output: server.output().slice(-3000) })
    return server
  }
  const stop = async (server: ServerProcess): Promise<void> => {
    server.child.kill('SIGTERM')
    t.equal(await server.exited, 0, 'drained and exited')
    // The service's own log lines (tap's instrumentation of child processes fails to write its records as another uid).
    const log = server.output().split('\n').filter(line => line.startsWith('{'))
    t.same(log.filter(line => /EACCES|EPERM|permission denied/i.test(line)), [], 'no permission problem')
  }
  const shortLink = async (server: ServerProcess, image: string): Promise<string> => {
    const head = await fetch(`${server.base}/byid/${ID}/${VERSION}/x86_64/${image}`, { method: 'HEAD' })
    t.equal(head.status, 200, `${image} serves`)
    const link = /^<http:\/\/[^/]+(\/s\/[^>]+)>/.exec(head.headers.get('link') ?? '')?.[1]
    t.ok(link, `${image} has a short link`)
    return link!
  }

  const first = await run(FIRST_UID)
  const link = await shortLink(first, 'full.iso')
  t.equal((await fetch(`${first.base}/images/${ID}/pxe-initrd?version=${VERSION}&arch=x86_64`)).status, 200, 'a PXE initrd with nmstatectl')
  await stop(first)

  const written = modes(dataDir)
  const names = Object.keys(written)
  for (const wanted of [/\.iso$/, /\.iso\.sha256$/, /^nmstatectl-/, /^short-links\/secret$/, /^short-links\/[0-9a-f]{64}$/, /^tmp$/]) {
    t.ok(names.some(name => wanted.test(name)), `wrote ${wanted}`)
  }
  for (const [name, found] of Object.entries(written)) {
    const isDirectory = statSync(join(dataDir, name)).isDirectory()
    t.same(found, { mode: expectedMode(name, isDirectory), uid: FIRST_UID, gid: 0 }, name)
  }
  t.same(statSync(dataDir).mode & 0o7777, 0o775, 'DATA_DIR itself')

  // An ISO cut short (a node lost mid-write): the second UID must delete it, download it again and
  // replace its sidecar, in directories the first UID owns.
  const isoName = names.find(name => name.endsWith('.iso'))!
  truncateSync(join(dataDir, isoName), 1 << 20)
  const second = await run(SECOND_UID)
  t.match(second.output(), /existing OS image is (unreadable|invalid), downloading it again/)
  t.equal((await fetch(`${second.base}${link}`, { method: 'HEAD' })).status, 200, 'the first UID\'s short link resolves (its record and the secret are readable)')
  await shortLink(second, 'minimal.iso')
  await stop(second)

  const after = modes(dataDir)
  t.equal(after[isoName]?.uid, SECOND_UID, 'the ISO was replaced')
  t.equal(after[`${isoName}.sha256`]?.uid, SECOND_UID, 'and its sidecar')
  t.ok(Object.entries(after).some(([name, found]) => name.startsWith('short-links/') && found.uid === SECOND_UID), 'a new short link beside the first UID\'s')
  for (const [name, found] of Object.entries(after)) {
    const isDirectory = statSync(join(dataDir, name)).isDirectory()
    t.equal(found.mode, expectedMode(name, isDirectory), `${name} still ${found.mode}`)
    t.equal(found.gid, 0, `${name} in group 0`)
  }
})
