import type { IsoImage } from '../iso9660/reader.ts'

export const VOLUME_PREFIXES = ['rhcos-', 'rhel-coreos-', 'fedora-coreos-', 'scos-'] as const
export const MIN_ROOTFS_BYTES = 100 << 20
export const MIN_KERNEL_BYTES = 5 << 20

export class InvalidIsoError extends Error {
  readonly code = 'IMG_INVALID_ISO'
}

/** The cheap checks upstream makes: a CoreOS volume id, a real rootfs and kernel. Reads metadata only. */
export function validateIso (image: IsoImage): void {
  const volumeId = image.volumeId
  if (!VOLUME_PREFIXES.some(prefix => volumeId.startsWith(prefix))) {
    throw new InvalidIsoError(`volume id "${volumeId}" does not start with ${VOLUME_PREFIXES.join(', ')}`)
  }
  const rootfs = image.lookup('/images/pxeboot/rootfs.img')
  if (rootfs === undefined || rootfs.size < MIN_ROOTFS_BYTES) {
    throw new InvalidIsoError(`images/pxeboot/rootfs.img is ${rootfs === undefined ? 'missing' : `${rootfs.size} bytes`}, expected at least ${MIN_ROOTFS_BYTES}`)
  }
  const kernel = image.lookup('/images/pxeboot/vmlinuz') ?? image.lookup('/images/pxeboot/kernel.img')
  if (kernel === undefined || kernel.size < MIN_KERNEL_BYTES) {
    throw new InvalidIsoError(`the kernel is ${kernel === undefined ? 'missing' : `${kernel.size} bytes`}, expected at least ${MIN_KERNEL_BYTES}`)
  }
}
