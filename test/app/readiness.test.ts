// "Readiness tells the truth": with WORKERS=2 and two real-layout images (nmstatectl read out of their live
// rootfs), the first /health 200 means every image request is answered, by every worker, at once.
import t, { type Test } from 'tap'
import { mkdirSync, readdirSync, readFileSync, truncateSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { buildSyntheticIso } from '../../services/coreos/synthetic-iso.ts'
import { filesArchive } from '../../services/coreos/ignition-archive.ts'
import { liveRootfsImg, REPO_ROOTFS, SHARED_FIXTURES, sharedSkip, unpackXz } from '../fixtures/rootfs-images.ts'
import { freePort } from '../helper.ts'
import { startServerProcess, untilHealthy } from '../fixtures/server-process.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b01'
const VERSIONS = [{ version: '418.94.202501221327-0', openshift: '4.18' }, { version: '419.96.202506010000-0', openshift: '4.19' }]
const ROUNDS = 30

/** A rootfs.img of the repository's small images (a 300 kB nmstatectl), sparse to the store's 100 MiB minimum. */
const repoRootfs = (image: string) => (path: string): string => liveRootfsImg(path, join(REPO_ROOTFS, image))

/** One of the team's real-layout rootfs.img files (a 3 MB nmstatectl), padded with zeros as real images carry *.osmet members. */
const sharedRootfs = (name: string) => (path: string): string => {
  writeFileSync(path, readFileSync(unpackXz(join(SHARED_FIXTURES, 'rootfs', name), join(path, '..'))))
  truncateSync(path, 100 << 20)
  return path
}

t.test('WORKERS=2, the repository\'s squashfs and EROFS images: from the first /health 200, every image request is answered by every worker',
  t => readyMeansServing(t, [repoRootfs('tiny-rhcos.squashfs'), repoRootfs('tiny-fcos.erofs')]))

// With a 3 MB nmstatectl, compressing it on a worker's event loop blocked it for most of a second per image:
// under-pressure then answered 503 to the image requests that followed the first /health 200.
t.test('the same with the real-layout rootfs.img fixtures (squashfs zstd, EROFS with the FCOS options)', { skip: sharedSkip('rootfs') },
  t => readyMeansServing(t, [sharedRootfs('squashfs-zstd.rootfs.img.xz'), sharedRootfs('erofs-fcos.rootfs.img.xz')]))

type Rootfs = (path: string) => string

async function readyMeansServing (t: Test, rootfs: [Rootfs, Rootfs]): Promise<void> {
  const dir = t.testdir()
  const IMAGES = VERSIONS.map((version, i) => ({ ...version, rootfs: rootfs[i]! }))
  const osImages = []
  for (const image of IMAGES) {
    const at = join(dir, image.version)
    mkdirSync(at)
    const iso = await buildSyntheticIso({ dir: at, volumeId: `rhcos-${image.version}`, rootfsFile: image.rootfs(join(at, 'rootfs.img')) })
    osImages.push({ openshift_version: image.openshift, cpu_architecture: 'x86_64', url: `file://${iso}`, version: image.version })
  }
  // A static-network ramdisk: PXE initrds then carry nmstatectl, and minimal ISOs need it.
  mkdirSync(join(dir, 'envs', ID), { recursive: true })
  writeFileSync(join(dir, 'envs', ID, 'discovery.ign'), '{"ignition":{"version":"3.2.0"}}')
  writeFileSync(join(dir, 'envs', ID, 'minimal-initrd.img'), filesArchive([{ name: 'etc/assisted/network/host.nmconnection', mode: 0o100600, data: Buffer.from('[connection]\n') }]))

  const port = await freePort()
  // The default under-pressure thresholds: this is what a pod runs with.
  const server = startServerProcess(t, port, { WORKERS: '2', DATA_DIR: join(dir, 'data'), LOG_LEVEL: 'info', OS_IMAGES: JSON.stringify(osImages), INFRAENVS_DIR: join(dir, 'envs') }, dir)
  const { base, child, output, exited } = server
  const health = await untilHealthy(server)
  t.equal(health, 200, `ready${health === 200 ? '' : `; output:\n${output().slice(-3000)}`}`)

  // At once, on new connections (which the primary hands to the workers in turn).
  const urls = IMAGES.flatMap(({ version }) => [`/images/${ID}/pxe-initrd?version=${version}&arch=x86_64`, `/byid/${ID}/${version}/x86_64/minimal.iso`])
  const answers = new Map<string, { statuses: string[], etags: Set<string> }>(urls.map(url => [url, { statuses: [], etags: new Set() }]))
  for (let round = 0; round < ROUNDS; round++) {
    for (const url of urls) {
      const res = await fetch(`${base}${url}`, { method: 'HEAD', headers: { connection: 'close' } })
      const answer = answers.get(url)!
      answer.statuses.push(res.status === 503 ? `503 after ${round} rounds, retry-after ${res.headers.get('retry-after')}` : String(res.status))
      answer.etags.add(res.headers.get('etag') ?? '')
    }
  }
  for (const [url, { statuses, etags }] of answers) {
    t.same(statuses.filter(s => s !== '200'), [], `${url}: ${ROUNDS} times 200`)
    t.equal(etags.size, 1, `${url}: one ETag from every worker`)
  }

  child.kill('SIGTERM')
  t.equal(await exited, 0)
  const records = output().split('\n').filter(line => line.startsWith('{')).map(line => JSON.parse(line) as Record<string, unknown>)
  const imageLines = records.filter(r => r.msg === 'request' && typeof r.route === 'string' && /pxe-initrd|:filename/.test(r.route))
  t.equal(imageLines.length, ROUNDS * urls.length, 'every image request logged')
  t.equal(new Set(imageLines.map(r => r.pid)).size, 2, 'answered by both workers')
  t.same(records.filter(r => Number(r.level) >= 50), [], 'no error logged')

  // The CPU work on nmstatectl (the search through the rootfs, level-9 gzip) is the primary's, once per image.
  const nmstateWork = records.filter(r => r.msg === 'nmstatectl extracted from the live rootfs' || r.msg === 'nmstatectl archive compressed')
  t.equal(nmstateWork.length, IMAGES.length * 2, 'each image extracted and compressed once')
  t.ok(nmstateWork.every(r => r.role === 'primary'), 'by the primary, never on a serving event loop')
  const data = readdirSync(join(dir, 'data'))
  for (const { version } of IMAGES) {
    t.ok(data.includes(`nmstatectl-${version}-x86_64.cpio.gz`), `${version}: the archive the workers read is in DATA_DIR`)
    t.equal(readFileSync(join(dir, 'data', `nmstatectl-${version}-x86_64.cpio.gz`)).readUInt16BE(0), 0x1f8b, 'gzip')
  }
}
