import { CpioFormatError } from '../errors.ts'

export const NEWC_MAGIC = '070701'
const HEADER = 110
export const TRAILER = 'TRAILER!!!'

export const MODE = { file: 0o100000, directory: 0o040000, symlink: 0o120000, typeMask: 0o170000 } as const

export interface CpioMember {
  /** Path without a leading slash, e.g. `usr/bin/nmstatectl`. */
  name: string
  mode: number
  data: Buffer
  mtime?: number
  uid?: number
  gid?: number
  /** Device numbers for character/block special files, e.g. [5, 1] for /dev/console. */
  rdev?: [number, number]
}

function pad4 (n: number): number {
  return (4 - (n % 4)) % 4
}

/**
 * The 110-byte ASCII header of a newc member: the magic, then 13 fields of 8
 * hex digits (cpio(5), "New ASCII Format"). Read and written here only.
 */
export interface NewcHeader {
  ino: number
  mode: number
  uid: number
  gid: number
  nlink: number
  mtime: number
  fileSize: number
  devMajor: number
  devMinor: number
  rdevMajor: number
  rdevMinor: number
  /** Bytes of the name that follows, its NUL included. */
  nameSize: number
  check: number
}

export const NEWC_HEADER_SIZE = HEADER
const FIELDS = ['ino', 'mode', 'uid', 'gid', 'nlink', 'mtime', 'fileSize', 'devMajor', 'devMinor', 'rdevMajor', 'rdevMinor', 'nameSize', 'check'] as const

export function writeNewcHeader (header: NewcHeader, upperHex = false): Buffer {
  const hex = FIELDS.map(field => (header[field] >>> 0).toString(16).padStart(8, '0')).join('')
  return Buffer.from(NEWC_MAGIC + (upperHex ? hex.toUpperCase() : hex), 'latin1')
}

/** The header at `offset` of `buf` (which must hold its 110 bytes). */
export function readNewcHeader (buf: Buffer, offset = 0): NewcHeader {
  if (offset + HEADER > buf.length) throw new CpioFormatError(`cpio: header at ${offset} is truncated`)
  const text = buf.toString('latin1', offset, offset + HEADER)
  if (!text.startsWith(NEWC_MAGIC)) throw new CpioFormatError(`cpio: bad magic at ${offset}`)
  const header = {} as Record<typeof FIELDS[number], number>
  FIELDS.forEach((field, i) => {
    const digits = text.slice(6 + i * 8, 14 + i * 8)
    if (!/^[0-9a-fA-F]{8}$/.test(digits)) throw new CpioFormatError(`cpio: bad header field at ${offset}`)
    header[field] = parseInt(digits, 16)
  })
  return header
}

export interface NewcOptions {
  /** go-cpio (upstream's writer) prints upper-case hex; coreos-installer lower-case. The kernel reads both. */
  upperHex?: boolean
  /** First inode number (go-cpio starts at 1). */
  firstIno?: number
}

/** Serializes members as an SVR4 "newc" archive, ending with the trailer. No 512-byte block padding. */
export function writeNewc (members: readonly CpioMember[], options: NewcOptions = {}): Buffer {
  const parts: Buffer[] = []
  let ino = options.firstIno ?? 1
  const entry = (name: string, mode: number, data: Buffer, nlink: number, inode: number, m?: CpioMember) => {
    const nameBytes = Buffer.from(`${name}\0`, 'utf8')
    const head = writeNewcHeader({
      ino: inode,
      mode,
      uid: m?.uid ?? 0,
      gid: m?.gid ?? 0,
      nlink,
      mtime: m?.mtime ?? 0,
      fileSize: data.length,
      devMajor: 0,
      devMinor: 0,
      rdevMajor: m?.rdev?.[0] ?? 0,
      rdevMinor: m?.rdev?.[1] ?? 0,
      nameSize: nameBytes.length,
      check: 0
    }, options.upperHex === true)
    parts.push(head, nameBytes, Buffer.alloc(pad4(HEADER + nameBytes.length)), data, Buffer.alloc(pad4(data.length)))
  }
  for (const m of members) {
    checkName(m.name)
    entry(m.name, m.mode, m.data, (m.mode & MODE.typeMask) === MODE.directory ? 2 : 1, ino++, m)
  }
  entry(TRAILER, 0, Buffer.alloc(0), 1, 0)
  return Buffer.concat(parts)
}

/**
 * The members plus a directory entry (0755) for every parent not yet listed:
 * the kernel does not create missing parents when it unpacks an initrd.
 */
export function withParentDirectories (members: readonly CpioMember[]): CpioMember[] {
  const out: CpioMember[] = []
  const seen = new Set<string>()
  for (const m of members) {
    const parts = m.name.split('/')
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/')
      if (!seen.has(dir)) {
        seen.add(dir)
        out.push({ name: dir, mode: MODE.directory | 0o755, data: Buffer.alloc(0) })
      }
    }
    seen.add(m.name)
    out.push(m)
  }
  return out
}

/** Rejects names that would escape the unpack root. */
export function checkName (name: string): void {
  if (name === '' || name.startsWith('/') || name.split('/').includes('..')) {
    throw new CpioFormatError(`cpio member name ${JSON.stringify(name)} is absolute or escapes the archive root`)
  }
}

export function alignTo4 (length: number): number {
  return length + pad4(length)
}
