import type { FileRange } from '../coreos/pxe.ts'
import { findNmstatectl, openLiveRootfs } from '../rootfs/index.ts'

/**
 * nmstatectl from the live rootfs inside the ISO, read in place: rootfs.img is
 * a newc cpio whose first member is root.squashfs or root.erofs, an ostree
 * physical root that keeps the binary inside its deployment.
 */
export async function extractNmstatectl (rootfs: FileRange): Promise<Buffer> {
  const fs = await openLiveRootfs(rootfs.path, rootfs.offset, rootfs.length)
  try {
    return (await findNmstatectl(fs)).data
  } finally {
    await fs.close()
  }
}
