import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { IsoImage } from '../../services/iso9660/reader.ts'
import { initrdFiles } from '../fixtures/initrd-reader.ts'
import { findEmbedAreas } from '../../services/coreos/embed-areas.ts'
import { isoImageView } from '../../services/coreos/customize.ts'

t.test('the start command with no configuration serves the built-in demo', async t => {
  const dir = t.testdir()
  const server = fileURLToPath(new URL('../../server.ts', import.meta.url))
  const child = spawn(process.execPath, [server], { cwd: dir, env: { PATH: process.env.PATH, HOME: dir, LISTEN_PORT: '0', LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  for (let i = 0; i < 300 && !/curl -o full\.iso/.test(out); i++) await new Promise(resolve => setTimeout(resolve, 50))
  const fullUrl = /curl -o full\.iso\s+(\S+)/.exec(out)?.[1]
  t.ok(fullUrl, 'copy-paste curl commands printed')
  t.match(out, /curl -o minimal\.iso/)
  t.match(out, /pxe-initrd/)
  t.match(out, /boot-artifacts\/kernel/)
  const base = new URL(fullUrl!).origin
  let health = 0
  for (let i = 0; i < 100 && health !== 200; i++) {
    health = (await fetch(`${base}/health`)).status
    if (health !== 200) await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.equal(health, 200)
  const iso = Buffer.from(await (await fetch(fullUrl!)).arrayBuffer())
  writeFileSync(`${dir}/full.iso`, iso)
  const image = await IsoImage.open(`${dir}/full.iso`)
  t.teardown(() => image.close())
  const areas = await findEmbedAreas(isoImageView(image))
  const ignition = initrdFiles(iso.subarray(areas.ignition!.offset, areas.ignition!.offset + areas.ignition!.length)).get('config.ign')
  t.match(ignition?.toString(), /Hello%20from%20assisted-image-service/)
  t.match((await image.readFile(image.lookup('/EFI/redhat/grub.cfg')!)).toString(), /console=ttyS0/)
  const minimalUrl = /curl -o minimal\.iso\s+(\S+)/.exec(out)![1]!
  t.equal((await fetch(minimalUrl, { method: 'HEAD' })).status, 200)
  child.kill('SIGTERM')
  const [code] = await once(child, 'exit') as [number]
  t.equal(code, 0, 'SIGTERM: exit 0')
})
