import type { ByteGate } from '../io/byte-gate.ts'
import { ByteSource } from './byte-source.ts'
import { ErofsFilesystem } from './erofs.ts'
import { CpioFormatError, FilesystemError } from '../errors.ts'
import { alignTo4, NEWC_HEADER_SIZE, readNewcHeader, type NewcHeader } from '../cpio/newc.ts'
import type { ReadOnlyFilesystem } from './filesystem.ts'
import { EROFS_MAGIC, hasMagic, SQUASHFS_MAGIC } from './magic.ts'
import { SquashfsFilesystem } from './squashfs.ts'

export { ByteSource } from './byte-source.ts'
export { FilesystemError } from '../errors.ts'
export { createReadStream, lookup, readFile, walk, type DirEntry, type FileType, type Inode, type ReadOnlyFilesystem, type Stat } from './filesystem.ts'
export { findNmstatectl, type FoundBinary } from './nmstatectl.ts'

const LIVE_MEMBERS = new Set(['root.squashfs', 'root.erofs'])

/** Opens a squashfs or EROFS image, told apart by their superblock magic. */
export async function openFilesystem (source: ByteSource): Promise<ReadOnlyFilesystem> {
  try {
    const head = await source.read(0, Math.min(source.length, EROFS_MAGIC.offset + 4), 'filesystem magic')
    if (hasMagic(head, SQUASHFS_MAGIC)) return await SquashfsFilesystem.open(source)
    if (hasMagic(head, EROFS_MAGIC)) return await ErofsFilesystem.open(source)
  } catch (err) {
    await source.close()
    throw err
  }
  await source.close()
  throw new FilesystemError('neither a squashfs nor an EROFS image')
}

/**
 * The root filesystem of a CoreOS live rootfs.img found at `[offset, offset +
 * length)` of `path`: rootfs.img is an uncompressed newc cpio whose first
 * member is root.squashfs (RHCOS <= 4.21) or root.erofs (Fedora CoreOS 42+,
 * RHCOS 10). The filesystem is read where it lies; nothing is copied.
 */
export async function openLiveRootfs (path: string, offset: number, length: number, gate?: ByteGate): Promise<ReadOnlyFilesystem> {
  const outer = await ByteSource.open(path, offset, length, gate)
  let member: { start: number, size: number, name: string }
  try {
    member = await firstMember(outer)
  } finally {
    await outer.close()
  }
  if (!LIVE_MEMBERS.has(member.name)) {
    throw new FilesystemError(`rootfs.img starts with ${JSON.stringify(member.name)}, not root.squashfs or root.erofs`)
  }
  return await openFilesystem(await ByteSource.open(path, offset + member.start, member.size, gate))
}

async function firstMember (source: ByteSource): Promise<{ start: number, size: number, name: string }> {
  if (source.length < NEWC_HEADER_SIZE) throw new FilesystemError('rootfs.img is too short for a cpio header')
  let header: NewcHeader
  try {
    header = readNewcHeader(await source.read(0, NEWC_HEADER_SIZE, 'rootfs.img cpio header'))
  } catch (err) {
    if (err instanceof CpioFormatError) throw new FilesystemError(`rootfs.img: ${err.message}`)
    throw err
  }
  const { fileSize: size, nameSize } = header
  if (nameSize < 2 || nameSize > 4096) throw new FilesystemError('rootfs.img has a corrupt cpio name')
  const name = (await source.read(NEWC_HEADER_SIZE, nameSize - 1, 'rootfs.img cpio name')).toString('latin1')
  const start = alignTo4(NEWC_HEADER_SIZE + nameSize)
  if (start + size > source.length) throw new FilesystemError(`${name} runs past the end of rootfs.img`)
  return { start, size, name }
}
