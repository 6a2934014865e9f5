// Opt-in (skips without QEMU and friends; .ci/run installs them): our writer's output and our
// customizations boot for real, BIOS through isolinux and UEFI through OVMF + GRUB.
import t from 'tap'
import { createHash } from 'node:crypto'
import { FilePool } from '../../services/compose/file-pool.ts'
import { ImageWriter } from '../../services/compose/image-writer.ts'
import { customize, fileTemplate } from '../../services/coreos/customize.ts'
import { filesArchive } from '../../services/coreos/ignition-archive.ts'
import { buildMinimalTemplate } from '../../services/coreos/minimal-template.ts'
import { IsoImage } from '../../services/iso9660/reader.ts'
import { bootableIso, bootQemu, bootSkip } from '../fixtures/boot-kit.ts'

const skip = bootSkip()
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')
const IGNITION = Buffer.from('{"ignition":{"version":"3.2.0"},"boot":"test"}')
const NETWORK = Buffer.from('[connection]\nid=eth0\n')
const RAMDISK = filesArchive([{ name: 'etc/assisted/eth0.nmconnection', mode: 0o100600, data: NETWORK }])

t.test('customized full and minimal ISOs boot (BIOS and UEFI) with the injected Ignition and kargs', { skip }, async t => {
  const dir = t.testdir()
  const iso = await bootableIso(dir)
  const image = await IsoImage.open(iso)
  const pool = new FilePool()
  t.teardown(async () => { await image.close(); await pool.close() })
  const full = customize(await fileTemplate(image, 'full-iso', 'x86_64', pool), { ignition: IGNITION, kargs: ['console=ttyS0', 'ais.test=full'] })
  await new ImageWriter().saveSparse(full, `${dir}/full.iso`)
  const minimalTemplate = await buildMinimalTemplate(image, { arch: 'x86_64', rootfsUrl: 'http://127.0.0.1:1/boot-artifacts/rootfs?arch=x86_64&version=x' }, pool)
  const minimal = customize(minimalTemplate, { ignition: IGNITION, ramdisk: RAMDISK, kargs: ['console=ttyS0', 'ais.test=minimal'] })
  await new ImageWriter().saveSparse(minimal, `${dir}/minimal.iso`)

  for (const [name, path, marker] of [['full', `${dir}/full.iso`, 'ais.test=full'], ['minimal', `${dir}/minimal.iso`, 'ais.test=minimal']] as const) {
    for (const uefi of [false, true]) {
      const console = await bootQemu({ cdrom: path, dir, uefi })
      const firmware = uefi ? 'UEFI' : 'BIOS'
      t.match(console, new RegExp(`AIS-CMDLINE: .*ignition\\.platform\\.id=metal.* console=ttyS0 ${marker}`), `${name} ${firmware}: kargs from the embed area`)
      t.match(console, `AIS-IGNITION: ${sha(IGNITION)}`, `${name} ${firmware}: the injected Ignition config`)
      if (name === 'minimal') {
        t.match(console, `AIS-RAMDISK: /etc/assisted/eth0.nmconnection ${sha(NETWORK)}`, `minimal ${firmware}: the ramdisk`)
        // GRUB strips the quotes isolinux passes on.
        t.match(console, /coreos\.live\.rootfs_url="?http:\/\/127\.0\.0\.1:1\/boot-artifacts\/rootfs/, `minimal ${firmware}: rootfs URL`)
        t.notMatch(console, /coreos\.liveiso=/)
      }
    }
  }
})
