import { open, type FileHandle } from 'node:fs/promises'
import { ByteReader, SECTOR } from './bytes.ts'
import { IsoFormatError } from '../errors.ts'
import { parseBootCatalog, parseBootRecord, type BootCatalog } from './el-torito.ts'
import { parseSusp, type RockRidge, type SuspEntries } from './rock-ridge.ts'
import { parseSystemArea, SYSTEM_AREA_SIZE, type SystemArea } from './system-area.ts'
import type { ByteGate } from '../io/byte-gate.ts'
import { readFully } from '../io/read-fully.ts'
import { DESCRIPTOR, FLAG, readDescriptorLayout, readDirectoryRecord, readPathTable, type DirectoryRecord } from './records.ts'

export interface Extent { lba: number, size: number }

export interface IsoEntry {
  /** Rock Ridge name, else Joliet or cleaned primary name. */
  name: string
  /** Identifier as stored in the primary tree, e.g. `IGNINFO.JSO;1`. */
  primaryName: string
  /** Absolute path with real names, e.g. `/coreos/igninfo.json`. */
  path: string
  isDirectory: boolean
  flags: number
  extents: Extent[]
  size: number
  lba: number
  byteOffset: number
  /** The record's 7-byte recording date. */
  recorded: Buffer
  rockRidge?: RockRidge
  children?: IsoEntry[]
}

export interface VolumeDescriptor {
  raw: Buffer
  systemId: string
  volumeId: string
  volumeSetId: string
  publisherId: string
  preparerId: string
  applicationId: string
  volumeSpaceSize: number
  /** Path table size in bytes and the LBAs of its little- and big-endian copies. */
  pathTable: { size: number, lLba: number, mLba: number }
  /** The root directory's record. */
  root: DirectoryRecord
  /** 17-byte creation date; the writer stamps it on what it creates. */
  created: Buffer
}

export interface FileIdentity { path: string, size: number, mtimeMs: number, ino: number, dev: number }

const MAX_DESCRIPTORS = 64
const MAX_DIRECTORY_BYTES = 4 << 20
const MAX_DEPTH = 64
const MAX_ENTRIES = 200_000
const MAX_CONTINUATIONS = 16
const MAX_CONTINUATION_BYTES = 64 << 10
/** Directory and continuation bytes one open may read: a crafted tree cannot make us read more. */
const MAX_METADATA_BYTES = 32 << 20

/**
 * A read-only view of an ISO 9660 image: volume descriptors, El Torito,
 * MBR/GPT and the directory trees, parsed once. File data is read on demand
 * through positional reads; the image is never loaded into memory.
 */
export class IsoImage {
  readonly identity: FileIdentity
  readonly systemArea: SystemArea
  readonly primary: VolumeDescriptor
  readonly joliet?: VolumeDescriptor & { level: number }
  readonly bootCatalog?: BootCatalog
  /** Set when the file's bytes may be absent until fetched (a block cache): every read asks it first. */
  readonly gate: ByteGate | undefined
  readonly #fh: FileHandle
  #root: IsoEntry = placeholderRoot()
  #jolietRoot: IsoEntry | undefined
  #hasRockRidge = false
  #entryCount = 0
  /** Bytes of directory records and continuation areas read while opening. */
  metadataBytesRead = 0

  private constructor (fh: FileHandle, identity: FileIdentity, gate: ByteGate | undefined, parts: {
    systemArea: SystemArea, primary: VolumeDescriptor, joliet?: VolumeDescriptor & { level: number }, bootCatalog?: BootCatalog
  }) {
    this.#fh = fh
    this.gate = gate
    this.identity = identity
    this.systemArea = parts.systemArea
    this.primary = parts.primary
    if (parts.joliet !== undefined) this.joliet = parts.joliet
    if (parts.bootCatalog !== undefined) this.bootCatalog = parts.bootCatalog
  }

  /** The primary tree, with Rock Ridge names when the image has them. */
  get root (): IsoEntry { return this.#root }
  get jolietRoot (): IsoEntry | undefined { return this.#jolietRoot }
  get hasRockRidge (): boolean { return this.#hasRockRidge }

  static async open (path: string, { gate }: { gate?: ByteGate | undefined } = {}): Promise<IsoImage> {
    const fh = await open(path, 'r')
    try {
      const stat = await fh.stat()
      const identity = { path, size: stat.size, mtimeMs: stat.mtimeMs, ino: stat.ino, dev: stat.dev }
      const read = (offset: number, length: number, what: string) => readExactly(fh, stat.size, offset, length, what, gate)
      const systemArea = parseSystemArea(await read(0, SYSTEM_AREA_SIZE, 'system area'))
      let primary: VolumeDescriptor | undefined
      let joliet: (VolumeDescriptor & { level: number }) | undefined
      let catalogLba: number | undefined
      for (let i = 0; i < MAX_DESCRIPTORS; i++) {
        const raw = await read((16 + i) * SECTOR, SECTOR, `volume descriptor ${16 + i}`)
        if (raw.toString('latin1', 1, 6) !== 'CD001') throw new IsoFormatError(`volume descriptor ${16 + i}: missing CD001 signature`)
        const type = raw[0]
        if (type === 255) break
        if (type === 0) catalogLba ??= parseBootRecord(raw)
        if (type === 1 && primary === undefined) primary = parseVolumeDescriptor(raw, 'primary volume descriptor')
        if (type === 2 && joliet === undefined) {
          const escape = raw.toString('latin1', DESCRIPTOR.escapes, DESCRIPTOR.escapes + 3)
          const level = { '%/@': 1, '%/C': 2, '%/E': 3 }[escape]
          if (level !== undefined) joliet = { ...parseVolumeDescriptor(raw, 'Joliet volume descriptor'), level }
        }
      }
      if (primary === undefined) throw new IsoFormatError('no primary volume descriptor')
      let bootCatalog: BootCatalog | undefined
      if (catalogLba !== undefined) {
        bootCatalog = parseBootCatalog(await read(catalogLba * SECTOR, SECTOR, 'El Torito catalog'), catalogLba)
      }
      const image = new IsoImage(fh, identity, gate, {
        systemArea, primary, ...(joliet !== undefined ? { joliet } : {}), ...(bootCatalog !== undefined ? { bootCatalog } : {})
      })
      await image.#loadTrees()
      return image
    } catch (err) {
      await fh.close()
      throw err
    }
  }

  async close (): Promise<void> {
    await this.#fh.close()
  }

  get volumeId (): string { return this.primary.volumeId }

  async #loadTrees (): Promise<void> {
    const root = this.#entryFrom(this.primary.root, undefined, '')
    root.path = '/'
    root.name = ''
    const visited = new Set<number>()
    this.#hasRockRidge = await this.#readDirectory(root, visited, 0, false, true)
    this.#root = root
    if (this.joliet !== undefined) {
      const jRoot = this.#entryFrom(this.joliet.root, undefined, '')
      jRoot.path = '/'
      jRoot.name = ''
      await this.#readDirectory(jRoot, new Set(), 0, true, false)
      this.#jolietRoot = jRoot
    }
  }

  #entryFrom (record: DirectoryRecord, susp: SuspEntries | undefined, parentPath: string, joliet = false): IsoEntry {
    const primaryName = joliet ? decodeUcs2(record.identifier) : record.identifier.toString('latin1')
    const cleaned = cleanPrimaryName(primaryName)
    const name = susp?.rockRidge.name ?? cleaned
    const entry: IsoEntry = {
      name,
      primaryName,
      path: `${parentPath}/${name}`,
      isDirectory: (record.flags & FLAG.directory) !== 0,
      flags: record.flags,
      extents: [{ lba: record.lba, size: record.size }],
      size: record.size,
      lba: record.lba,
      byteOffset: record.lba * SECTOR,
      recorded: Buffer.from(record.recorded)
    }
    if (susp !== undefined && Object.keys(susp.rockRidge).length > 0) entry.rockRidge = susp.rockRidge
    return entry
  }

  /** Reads a directory's records into `dir.children`; returns whether Rock Ridge was found on ".". */
  async #readDirectory (dir: IsoEntry, visited: Set<number>, depth: number, joliet: boolean, isRoot: boolean): Promise<boolean> {
    if (depth > MAX_DEPTH) throw new IsoFormatError(`directory ${dir.path}: nesting deeper than ${MAX_DEPTH}`)
    if (visited.has(dir.lba)) throw new IsoFormatError(`directory ${dir.path}: loops back to an ancestor`)
    visited.add(dir.lba)
    if (dir.size > MAX_DIRECTORY_BYTES) throw new IsoFormatError(`directory ${dir.path}: ${dir.size} bytes is too large`)
    const data = await this.#readMetadata(dir.byteOffset, dir.size, `directory ${dir.path}`)
    const children: IsoEntry[] = []
    let rockRidge = false
    let pending: IsoEntry | undefined
    let offset = 0
    let index = 0
    while (offset < data.length) {
      const length = data[offset]!
      if (length === 0) {
        offset = (Math.floor(offset / SECTOR) + 1) * SECTOR
        continue
      }
      const record = readDirectoryRecord(data, offset, `directory ${dir.path} record at ${offset}`)
      offset += length
      const isDot = index === 0
      const isDotDot = index === 1
      index++
      let susp: SuspEntries | undefined
      if (!joliet && record.systemUse.length > 0) {
        susp = await this.#parseSuspChain(record.systemUse)
        if (isRoot && isDot && (susp.sp !== undefined || susp.extensions.length > 0)) rockRidge = true
      }
      if (isDot || isDotDot) continue
      if (++this.#entryCount > MAX_ENTRIES) throw new IsoFormatError(`more than ${MAX_ENTRIES} directory records`)
      if (pending !== undefined) {
        // Multi-extent file: records with the same name continue the previous one.
        pending.extents.push({ lba: record.lba, size: record.size })
        pending.size += record.size
        if ((record.flags & FLAG.multiExtent) === 0) pending = undefined
        continue
      }
      const entry = this.#entryFrom(record, susp, dir.path === '/' ? '' : dir.path, joliet)
      if (joliet) entry.name = cleanJolietName(entry.primaryName)
      entry.path = `${dir.path === '/' ? '' : dir.path}/${entry.name}`
      children.push(entry)
      if ((record.flags & FLAG.multiExtent) !== 0) pending = entry
    }
    dir.children = children
    for (const child of children) {
      if (child.isDirectory) await this.#readDirectory(child, visited, depth + 1, joliet, false)
    }
    return rockRidge
  }

  async #parseSuspChain (area: Buffer): Promise<SuspEntries> {
    let susp = parseSusp(area)
    for (let hops = 0; susp.continuation !== undefined; hops++) {
      if (hops >= MAX_CONTINUATIONS) throw new IsoFormatError(`system use area: more than ${MAX_CONTINUATIONS} continuation areas`)
      const { lba, offset, length } = susp.continuation
      if (length > MAX_CONTINUATION_BYTES) throw new IsoFormatError(`system use area: continuation of ${length} bytes is too large`)
      const more = await this.#readMetadata(lba * SECTOR + offset, length, 'continuation area')
      susp = parseSusp(more, susp)
    }
    return susp
  }

  async #readMetadata (offset: number, length: number, what: string): Promise<Buffer> {
    this.metadataBytesRead += length
    if (this.metadataBytesRead > MAX_METADATA_BYTES) throw new IsoFormatError(`${what}: directory metadata exceeds ${MAX_METADATA_BYTES} bytes`)
    return await readExactly(this.#fh, this.identity.size, offset, length, what, this.gate)
  }

  /** Finds a file or directory: Rock Ridge names, then Joliet, then primary (8.3, case-insensitive). */
  lookup (path: string): IsoEntry | undefined {
    const parts = path.split('/').filter(p => p !== '')
    const byName = (tree: IsoEntry | undefined, match: (entry: IsoEntry, part: string) => boolean) => {
      let node = tree
      for (const part of parts) {
        node = node?.children?.find(child => match(child, part))
        if (node === undefined) return undefined
      }
      return node
    }
    if (this.hasRockRidge) {
      const found = byName(this.root, (entry, part) => entry.rockRidge?.name === part)
      if (found !== undefined) return found
    }
    const jolietFound = byName(this.jolietRoot, (entry, part) => entry.name === part)
    if (jolietFound !== undefined) return jolietFound
    return byName(this.root, (entry, part) => cleanPrimaryName(entry.primaryName).toUpperCase() === part.toUpperCase())
  }

  /** Every entry of the primary tree (with Rock Ridge names), depth first. */
  * walk (from: IsoEntry = this.root): Generator<IsoEntry> {
    for (const child of from.children ?? []) {
      yield child
      if (child.isDirectory) yield * this.walk(child)
    }
  }

  /**
   * The little-endian path table as (name, LBA, parent number) records: a
   * second, independent index of the directories, used to cross-check trees.
   */
  async readPathTable (volume: VolumeDescriptor = this.primary): Promise<Array<{ name: string, lba: number, parent: number }>> {
    const { size, lLba } = volume.pathTable
    if (size > MAX_DIRECTORY_BYTES) throw new IsoFormatError(`path table of ${size} bytes is too large`)
    const joliet = volume.raw[0] === 2
    // The root's identifier is one zero byte, in Joliet tables too.
    return readPathTable(await this.readAt(lLba * SECTOR, size), false, 'path table').map(({ identifier: id, lba, parent }) => ({
      name: id.length === 1 && id[0] === 0 ? '' : joliet ? decodeUcs2(id) : id.toString('latin1'),
      lba,
      parent
    }))
  }

  /** Reads `length` bytes at `offset` of the image. */
  async readAt (offset: number, length: number): Promise<Buffer> {
    return await readExactly(this.#fh, this.identity.size, offset, length, 'image range', this.gate)
  }

  /** Reads a whole file's bytes (every extent). Meant for small files: configs, JSON, boot images. */
  async readFile (entry: IsoEntry): Promise<Buffer> {
    const parts = await Promise.all(entry.extents.map(e => this.readAt(e.lba * SECTOR, e.size)))
    return Buffer.concat(parts)
  }
}

function parseVolumeDescriptor (raw: Buffer, what: string): VolumeDescriptor {
  const r = new ByteReader(raw, what)
  const layout = readDescriptorLayout(raw, what)
  const joliet = raw[0] === 2
  const text = ([offset, length]: readonly [number, number]) => joliet
    ? decodeUcs2(r.bytes(offset, length)).replace(/[ \0]+$/, '')
    : r.text(offset, length)
  return {
    raw: Buffer.from(raw),
    systemId: text(DESCRIPTOR.systemId),
    volumeId: text(DESCRIPTOR.volumeId),
    volumeSetId: text(DESCRIPTOR.volumeSetId),
    publisherId: text(DESCRIPTOR.publisherId),
    preparerId: text(DESCRIPTOR.preparerId),
    applicationId: text(DESCRIPTOR.applicationId),
    volumeSpaceSize: layout.volumeSectors,
    pathTable: { size: layout.pathTableSize, lLba: layout.lPathTable, mLba: layout.mPathTable },
    root: {
      ...layout.root,
      recorded: Buffer.from(layout.root.recorded),
      identifier: Buffer.from(layout.root.identifier),
      systemUse: Buffer.from(layout.root.systemUse)
    },
    created: Buffer.from(r.bytes(...DESCRIPTOR.created))
  }
}

/** `IGNINFO.JSO;1` -> `IGNINFO.JSO`, `VMLINUZ.;1` -> `VMLINUZ`. */
function cleanPrimaryName (name: string): string {
  return name.replace(/;1$/, '').replace(/\.$/, '')
}

function decodeUcs2 (bytes: Buffer): string {
  if (bytes.length % 2 !== 0) throw new IsoFormatError('Joliet identifier has an odd byte length')
  return Buffer.from(bytes).swap16().toString('utf16le')
}

function cleanJolietName (name: string): string {
  return name.replace(/;1$/, '')
}

async function readExactly (fh: FileHandle, fileSize: number, offset: number, length: number, what: string, gate: ByteGate | undefined): Promise<Buffer> {
  if (offset < 0 || length < 0 || offset + length > fileSize) {
    throw new IsoFormatError(`${what}: bytes ${offset}..${offset + length} are past the end of the ${fileSize}-byte image`)
  }
  return await readFully(fh, length, offset, () => new IsoFormatError(`${what}: image ended early`), gate)
}

function placeholderRoot (): IsoEntry {
  return { name: '', primaryName: '', path: '/', isDirectory: true, flags: FLAG.directory, extents: [], size: 0, lba: 0, byteOffset: 0, recorded: Buffer.alloc(7) }
}
