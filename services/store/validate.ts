import type { IsoImage } from '../iso9660/reader.ts'
import { InvalidIso } from '../errors.ts'

const VOLUME_PREFIXES = ['rhcos-', 'rhel-coreos-', 'fedora-coreos-', 'scos-'] as const
const MIN_ROOTFS_BYTES = 100 << 20
const MIN_KERNEL_BYTES = 5 << 20

/** The cheap checks upstream makes: a CoreOS volume id, a real rootfs and kernel. Reads metadata only. */
export function validateIso (image: IsoImage): void {
  const volumeId = image.volumeId
  if (!VOLUME_PREFIXES.some(prefix => volumeId.startsWith(prefix))) {
    throw new InvalidIso(`volume id "${volumeId}" does not start with ${VOLUME_PREFIXES.join(', ')}`)
  }
  const rootfs = image.lookup('/images/pxeboot/rootfs.img')
  if (rootfs === undefined || rootfs.size < MIN_ROOTFS_BYTES) {
    throw new InvalidIso(`images/pxeboot/rootfs.img is ${rootfs === undefined ? 'missing' : `${rootfs.size} bytes`}, expected at least ${MIN_ROOTFS_BYTES}`)
  }
  const kernel = image.lookup('/images/pxeboot/vmlinuz') ?? image.lookup('/images/pxeboot/kernel.img')
  if (kernel === undefined || kernel.size < MIN_KERNEL_BYTES) {
    throw new InvalidIso(`the kernel is ${kernel === undefined ? 'missing' : `${kernel.size} bytes`}, expected at least ${MIN_KERNEL_BYTES}`)
  }
}
