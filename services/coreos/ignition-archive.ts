import { promisify } from 'node:util'
import { gzip, gzipSync } from 'node:zlib'
import { MODE, alignTo4, withParentDirectories, writeNewc, type CpioMember } from '../cpio/newc.ts'

/**
 * The archive the live initramfs unpacks from the Ignition embed area (or the
 * tail of a PXE initrd): a gzip-compressed newc cpio holding `config.ign`
 * exactly as received, NUL-padded to a multiple of 4 bytes.
 */
export function ignitionArchive (config: Buffer, extras: readonly CpioMember[] = []): Buffer {
  const members: CpioMember[] = [
    { name: 'config.ign', mode: MODE.file | 0o644, data: config },
    ...withParentDirectories(extras)
  ]
  return padTo4(gzipSync(writeNewc(members)))
}

/** A gzip newc archive of files (with their parent directories), e.g. `usr/bin/nmstatectl`. */
export function filesArchive (members: readonly CpioMember[]): Buffer {
  return padTo4(gzipSync(writeNewc(withParentDirectories(members)), { level: 9 }))
}

const gzipInPool = promisify(gzip)

/**
 * filesArchive compressed on libuv's thread pool, byte for byte the same: level 9
 * over a multi-megabyte binary (nmstatectl) holds a thread for most of a second.
 */
export async function filesArchiveOffLoop (members: readonly CpioMember[]): Promise<Buffer> {
  return padTo4(await gzipInPool(writeNewc(withParentDirectories(members)), { level: 9 }))
}

export function padTo4 (data: Buffer): Buffer {
  const length = alignTo4(data.length)
  return length === data.length ? data : Buffer.concat([data, Buffer.alloc(length - data.length)])
}
