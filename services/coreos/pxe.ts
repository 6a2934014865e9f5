import { ComposedImage } from '../compose/composed-image.ts'
import type { FilePool } from '../compose/file-pool.ts'
import type { ByteGate } from '../io/byte-gate.ts'
import type { IsoImage } from '../iso9660/reader.ts'
import { ignitionArchive, padTo4 } from './ignition-archive.ts'

/** Bytes of a file; `gate` is set when they may be absent until fetched (the file is a block cache). */
export interface FileRange { path: string, offset: number, length: number, gate?: ByteGate }

/** The raw boot artifacts of a full ISO, as byte ranges of the ISO file. */
export interface BootArtifacts {
  kernel?: FileRange
  kernelName: string
  initrd?: FileRange
  rootfs?: FileRange
  insFile?: FileRange
  /** First 8 bytes of images/initrd.addrsize (s390x): the initrd load address. */
  addrsizePrefix?: Buffer
}

export async function findBootArtifacts (image: IsoImage): Promise<BootArtifacts> {
  const range = (path: string): FileRange | undefined => {
    const entry = image.lookup(path)
    if (entry === undefined || entry.isDirectory || entry.extents.length !== 1) return undefined
    return { path: image.identity.path, offset: entry.byteOffset, length: entry.size, ...(image.gate !== undefined ? { gate: image.gate } : {}) }
  }
  // s390x ISOs built before 2024-12 name the kernel kernel.img.
  const vmlinuz = range('/images/pxeboot/vmlinuz')
  const kernel = vmlinuz ?? range('/images/pxeboot/kernel.img')
  const artifacts: BootArtifacts = { kernelName: vmlinuz !== undefined ? 'vmlinuz' : 'kernel.img' }
  if (kernel !== undefined) artifacts.kernel = kernel
  const initrd = range('/images/pxeboot/initrd.img')
  if (initrd !== undefined) artifacts.initrd = initrd
  const rootfs = range('/images/pxeboot/rootfs.img')
  if (rootfs !== undefined) artifacts.rootfs = rootfs
  const ins = range('/generic.ins')
  if (ins !== undefined) artifacts.insFile = ins
  const addrsize = image.lookup('/images/initrd.addrsize')
  if (addrsize !== undefined && addrsize.size >= 8) artifacts.addrsizePrefix = (await image.readFile(addrsize)).subarray(0, 8)
  return artifacts
}

export async function rangeImage (range: FileRange, pool: FilePool): Promise<ComposedImage> {
  return await ComposedImage.fromSegments([{ kind: 'file', path: range.path, offset: range.offset, length: range.length }], pool)
}

export interface PxeContent {
  ignition: Buffer
  ramdisk?: Buffer
  nmstate?: Buffer
}

/**
 * initrd.img + Ignition archive + ramdisk + nmstate archive, each piece
 * starting 4-byte aligned (the kernel finds uncompressed archives only there).
 */
export function pxeInitrd (initrd: ComposedImage, content: PxeContent): ComposedImage {
  const tail: Buffer[] = []
  const misalign = initrd.size % 4
  if (misalign !== 0) tail.push(Buffer.alloc(4 - misalign))
  tail.push(ignitionArchive(content.ignition))
  if (content.ramdisk !== undefined && content.ramdisk.length > 0) {
    tail.push(padTo4(content.ramdisk))
    if (content.nmstate !== undefined) tail.push(padTo4(content.nmstate))
  }
  return initrd.append(tail)
}

/** s390x initrd.addrsize: the load address from the ISO, then the big-endian size of the PXE initrd. */
export function initrdAddrsize (prefix: Buffer, initrdLength: number): Buffer {
  const out = Buffer.alloc(16)
  prefix.copy(out, 0, 0, 8)
  out.writeBigUInt64BE(BigInt(initrdLength), 8)
  return out
}
