import { promisify } from 'node:util'
import { gunzip } from 'node:zlib'
import type { FileRange } from '../coreos/pxe.ts'
import { filesArchiveOffLoop } from '../coreos/ignition-archive.ts'
import { MODE, withParentDirectories, writeNewc, type CpioMember } from '../cpio/newc.ts'
import { findNmstatectl, openLiveRootfs } from '../rootfs/index.ts'

/**
 * nmstatectl from the live rootfs inside the ISO, read in place: rootfs.img is
 * a newc cpio whose first member is root.squashfs or root.erofs, an ostree
 * physical root that keeps the binary inside its deployment.
 */
export async function extractNmstatectl (rootfs: FileRange): Promise<Buffer> {
  const fs = await openLiveRootfs(rootfs.path, rootfs.offset, rootfs.length, rootfs.gate)
  try {
    return (await findNmstatectl(fs)).data
  } finally {
    await fs.close()
  }
}

function members (binary: Buffer): CpioMember[] {
  return [{ name: 'usr/bin/nmstatectl', mode: MODE.file | 0o755, data: binary }]
}

/** What PXE initrds and minimal ISOs carry: `usr/bin/nmstatectl` in a gzip newc cpio, compressed off the event loop. */
export async function nmstateArchive (binary: Buffer): Promise<Buffer> {
  return await filesArchiveOffLoop(members(binary))
}

const gunzipInPool = promisify(gunzip)

/** Whether `archive` (one read back from DATA_DIR) unpacks to exactly the archive of `binary`. */
export async function isNmstateArchiveOf (archive: Buffer, binary: Buffer): Promise<boolean> {
  const expected = writeNewc(withParentDirectories(members(binary)))
  try {
    return (await gunzipInPool(archive, { maxOutputLength: expected.length + 1 })).equals(expected)
  } catch {
    return false
  }
}
