// Two replicas that downloaded the same ISO at different times (other paths, inodes and mtimes) must answer
// with identical validators, so a client's If-Range from one gets a 206 from the other behind a balancer.
import t from 'tap'
import { copyFileSync, mkdirSync, readFileSync, utimesSync } from 'node:fs'
import { join } from 'node:path'
import { decDateTime } from '../../services/iso9660/dates.ts'
import { IsoImage } from '../../services/iso9660/reader.ts'
import { filesArchive } from '../../services/coreos/ignition-archive.ts'
import { routeIsos, startService, X86_VERSION } from '../fixtures/service.ts'

const ID = '0b9f3a56-2d1e-4c8a-9f1b-3e5d7c9a1b2c'
const infraEnvs = { [ID]: { ignition: Buffer.from('{"ignition":{"version":"3.2.0"}}'), ramdisk: filesArchive([{ name: 'etc/assisted/x', mode: 0o100644, data: Buffer.from('x') }]) } }

t.test('ETag and Last-Modified come from content: identical on two replicas with different copies of the ISO', async t => {
  const dir = t.testdir()
  const isos = await routeIsos(join(dir, 'source'))
  const replicas = []
  for (const [i, when] of [[0, new Date('2026-01-02T03:04:05Z')], [1, new Date('2026-06-07T08:09:10Z')]] as const) {
    mkdirSync(join(dir, `r${i}`))
    const copy = join(dir, `r${i}`, 'rhcos.iso')
    copyFileSync(isos.x86, copy)
    utimesSync(copy, when, when)
    replicas.push(await startService(t, { isos: { x86: copy }, infraEnvs, openshiftVersion: '4.19', env: { DATA_DIR: join(dir, `r${i}`, 'data') } }))
  }
  const urls = [
    `/byid/${ID}/${X86_VERSION}/x86_64/full.iso`, `/byid/${ID}/${X86_VERSION}/x86_64/minimal.iso`,
    `/images/${ID}/pxe-initrd?version=${X86_VERSION}&arch=x86_64`, `/boot-artifacts/rootfs?version=${X86_VERSION}&arch=x86_64`,
    `/boot-artifacts/kernel?version=${X86_VERSION}&arch=x86_64`
  ]
  const source = await IsoImage.open(isos.x86)
  const created = decDateTime(source.primary.created)!
  await source.close()
  for (const url of urls) {
    const [a, b] = await Promise.all(replicas.map(r => r.app.inject({ method: 'HEAD', url })))
    t.equal(a!.statusCode, 200, url)
    t.equal(a!.headers.etag, b!.headers.etag, `${url}: same ETag`)
    t.equal(a!.headers['last-modified'], b!.headers['last-modified'], `${url}: same Last-Modified`)
    t.equal(a!.headers['content-length'], b!.headers['content-length'])
    if (url.startsWith('/boot-artifacts')) t.equal(a!.headers['last-modified'], created.toUTCString(), `${url}: dated by the ISO's creation date`)
    const ranged = await replicas[1]!.app.inject({ url, headers: { range: 'bytes=0-99', 'if-range': String(a!.headers.etag) } })
    t.equal(ranged.statusCode, 206, `${url}: If-Range with replica A's ETag gets 206 from replica B`)
  }
  const sidecar = JSON.parse(readFileSync(join(dir, 'r0', 'data', `rhcos-full-iso-${X86_VERSION}-x86_64.iso.sha256`), 'utf8'))
  t.match(sidecar, { sha256: /^[0-9a-f]{64}$/, size: Number })
})
