import { ByteReader, writeBoth32 } from './bytes.ts'
import { IsoFormatError } from '../errors.ts'

/** POSIX attributes and the real name carried by SUSP/RRIP entries of one directory record. */
export interface RockRidge {
  name?: string
  mode?: number
  nlink?: number
  uid?: number
  gid?: number
  ino?: number
  /** Raw TF entry (flags + timestamps), reproduced verbatim by the writer. */
  timestamps?: Buffer
  symlink?: string
}

export interface Continuation { lba: number, offset: number, length: number }

export interface SuspEntries {
  rockRidge: RockRidge
  continuation?: Continuation
  /** SP entry present (only on the root's "." record). */
  sp?: { skip: number }
  /** ER extension identifiers. */
  extensions: string[]
}

const MAX_SUSP_ENTRIES = 256

/**
 * Parses one system use area. `into` accumulates across a CE chain: an NM or SL
 * entry may continue in the next area.
 */
export function parseSusp (area: Buffer, into?: SuspEntries): SuspEntries {
  const result: SuspEntries = into ?? { rockRidge: {}, extensions: [] }
  delete result.continuation
  const r = new ByteReader(area, 'system use area')
  let offset = 0
  let count = 0
  while (offset + 4 <= area.length && count++ < MAX_SUSP_ENTRIES) {
    const sig = r.ascii(offset, 2)
    const len = r.u8(offset + 2)
    if (sig === 'ST' || sig === '\0\0') break
    if (len < 4 || offset + len > area.length) {
      throw new IsoFormatError(`system use area: entry ${JSON.stringify(sig)} of length ${len} overruns the area`)
    }
    const e = new ByteReader(r.bytes(offset, len), `SUSP ${sig} entry`)
    const rr = result.rockRidge
    switch (sig) {
      case 'SP':
        result.sp = { skip: e.u8(6) }
        break
      case 'CE':
        result.continuation = { lba: e.u32le(4), offset: e.u32le(12), length: e.u32le(20) }
        break
      case 'ER': {
        const idLen = e.u8(4)
        result.extensions.push(e.ascii(8, idLen))
        break
      }
      case 'NM': {
        const flags = e.u8(4)
        if ((flags & 0x06) === 0) rr.name = (rr.name ?? '') + e.bytes(5, len - 5).toString('utf8')
        break
      }
      case 'PX':
        rr.mode = e.u32le(4)
        rr.nlink = e.u32le(12)
        rr.uid = e.u32le(20)
        rr.gid = e.u32le(28)
        if (len >= 44) rr.ino = e.u32le(36)
        break
      case 'TF':
        rr.timestamps = Buffer.from(e.bytes(4, len - 4))
        break
      case 'SL': {
        let at = 5
        const parts: string[] = rr.symlink === undefined || rr.symlink === '' ? [] : [rr.symlink]
        while (at + 2 <= len) {
          const flags = e.u8(at)
          const clen = e.u8(at + 1)
          const text = e.bytes(at + 2, clen).toString('utf8')
          parts.push(flags & 0x02 ? '.' : flags & 0x04 ? '..' : flags & 0x08 ? '' : text)
          at += 2 + clen
        }
        rr.symlink = parts.join('/')
        break
      }
    }
    offset += len
  }
  return result
}

// --- building ---

function entry (sig: string, data: Buffer): Buffer {
  const out = Buffer.alloc(4 + data.length)
  out.write(sig, 0, 'latin1')
  out[2] = out.length
  out[3] = 1
  data.copy(out, 4)
  return out
}

export function spEntry (): Buffer {
  return entry('SP', Buffer.from([0xbe, 0xef, 0]))
}

/** PX as RRIP 1.10 writes it (36 bytes, no inode number), like genisoimage. */
export function pxEntry (mode: number, nlink: number, uid: number, gid: number): Buffer {
  const data = Buffer.alloc(32)
  writeBoth32(data, 0, mode)
  writeBoth32(data, 8, nlink)
  writeBoth32(data, 16, uid)
  writeBoth32(data, 24, gid)
  return entry('PX', data)
}

export function tfEntry (timestamps: Buffer): Buffer {
  return entry('TF', timestamps)
}

/** NM entries for a name, split when one entry cannot hold it (CONTINUE flag). */
export function nmEntries (name: string): Buffer[] {
  const bytes = Buffer.from(name, 'utf8')
  const out: Buffer[] = []
  for (let at = 0; at < bytes.length || out.length === 0; at += 250) {
    const part = bytes.subarray(at, at + 250)
    out.push(entry('NM', Buffer.concat([Buffer.from([at + 250 < bytes.length ? 1 : 0]), part])))
  }
  return out
}

export function ceEntry (ce: Continuation): Buffer {
  const data = Buffer.alloc(24)
  writeBoth32(data, 0, ce.lba)
  writeBoth32(data, 8, ce.offset)
  writeBoth32(data, 16, ce.length)
  return entry('CE', data)
}

export const CE_ENTRY_LENGTH = 28

const RRIP_ID = 'RRIP_1991A'
const RRIP_DESCRIPTOR = 'THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS'
const RRIP_SOURCE = 'PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.'

export function erEntry (): Buffer {
  const head = Buffer.from([RRIP_ID.length, RRIP_DESCRIPTOR.length, RRIP_SOURCE.length, 1])
  return entry('ER', Buffer.concat([head, Buffer.from(RRIP_ID + RRIP_DESCRIPTOR + RRIP_SOURCE, 'latin1')]))
}
