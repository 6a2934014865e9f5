import type { Segment } from '../compose/segment.ts'
import { SECTOR, sectorsFor, writePadded } from './bytes.ts'
import { IsoFormatError } from '../errors.ts'
import { buildBootCatalog, type BootEntry } from './el-torito.ts'
import {
  DESCRIPTOR, FLAG, directoryRecordLength, MAX_RECORD_LENGTH, pathTableSize, systemUseOffset, writeDescriptorLayout, writeDirectoryRecord, writePathTable,
  type DescriptorLayout, type DirectoryRecord
} from './records.ts'
import { CE_ENTRY_LENGTH, ceEntry, erEntry, nmEntries, pxEntry, spEntry, tfEntry } from './rock-ridge.ts'
import { compareFileIdentifiers, encodeUcs2, jolietName, uniquePrimaryName } from './names.ts'
import { buildBackupGpt, gptBackupBytes, buildSystemArea, SYSTEM_AREA_SIZE, type HybridLayout, type SystemArea } from './system-area.ts'

export interface IsoNode {
  name: string
  /** Present for directories. */
  children?: IsoNode[]
  /** Present for files. */
  content?: Segment
  /** Preferred primary identifier (kept from a source ISO so 8.3 lookups keep working). */
  primaryName?: string
  mode?: number
  uid?: number
  gid?: number
  /** Raw Rock Ridge TF payload; defaults to the recording date. */
  timestamps?: Buffer
  /** 7-byte directory record date; defaults to the volume creation date. */
  recorded?: Buffer
  hidden?: boolean
}

export interface BootImageSpec {
  /** Real path of the boot image in the tree, e.g. `/isolinux/isolinux.bin`. */
  path: string
  platform: number
  loadSegment?: number
  /** 512-byte sectors to load; `'image'` = ceil(size / 2048) × 4, capped at 65535 (genisoimage/xorrisofs). */
  loadSectors: number | 'image'
  bootInfoTable?: boolean
  mediaType?: number
  systemType?: number
}

export interface VolumeIdentity {
  systemId: string
  volumeId: string
  volumeSetId: string
  publisherId?: string
  preparerId?: string
  applicationId?: string
  /** 17-byte ISO 9660 date; the writer never reads the clock. */
  created: Buffer
  /** Raw descriptors of a source ISO: identifiers and dates are copied verbatim from them. */
  primaryTemplate?: Buffer
  jolietTemplate?: Buffer
}

export interface HybridSource {
  systemArea: SystemArea
  /** Byte size of the source image file (isohybrid pads past the volume). */
  imageSize: number
  volumeSectors: number
  /** Path of the source file that starts at this 2048-byte LBA, to re-point partitions and the MBR boot pointer. */
  pathAtLba: (lba: number) => string | undefined
}

export interface IsoWriteOptions {
  volume: VolumeIdentity
  rockRidge: boolean
  joliet: boolean
  boot?: { catalogPath: string, entries: BootImageSpec[] }
  hybrid?: HybridSource
  /** Reads a file's content; used only for boot-info-table images. */
  readContent: (content: Segment) => Promise<Buffer>
}

export interface LayoutPlan {
  segments: Segment[]
  size: number
  volumeSectors: number
  /** Where every file landed, by real path. */
  files: Map<string, { lba: number, size: number }>
}

// --- internal model ---

interface Dir {
  node: IsoNode
  path: string
  parent: Dir | undefined
  dirs: Dir[]
  files: File[]
  primaryId: Buffer
  jolietId: Buffer
  /** Position in the path tables (1 for the root), the same in both trees. */
  number: number
}

interface File {
  node: IsoNode
  path: string
  primaryId: Buffer
  jolietId: Buffer
  size: number
  content: Segment
}

type Child = { dir: Dir } | { file: File }

/** What a directory record points at: a directory, or one extent of a file. */
type RecordTarget = { dir: Dir } | { file: File, extent: number }

/**
 * A directory record before the layout is placed: everything but its target's
 * LBA and size (and where its continuation area lands), so its length is known.
 */
interface SizedRecord {
  identifier: Buffer
  flags: number
  recorded: Buffer
  target: RecordTarget
  /** System Use entries kept in the record. */
  systemUse: Buffer[]
  /** Entries moved to a continuation area (a CE entry in the record points there). */
  continuation?: Continuation
  length: number
}

interface Continuation { data: Buffer }

/** Where each continuation area landed. */
type ContinuationPlaces = Map<Continuation, { lba: number, offset: number }>

/** Where a directory's records lie in one of the two trees. */
interface Extent { lba: number, size: number }

/** Everything placed: directory extents of both trees, continuation areas, and each file's first LBA (0 when empty). */
interface Placement {
  dirs: { primary: Map<Dir, Extent>, joliet: Map<Dir, Extent> }
  continuations: ContinuationPlaces
  files: Map<File, number>
}

const MAX_EXTENT = 0xfffff800
const HYBRID_ALIGN = 1 << 20

/** Plans an ISO 9660 image as segments; file data stays where it is. */
export async function planIso (root: IsoNode, options: IsoWriteOptions): Promise<LayoutPlan> {
  const recorded = options.volume.created.length === 17 ? recordDate(options.volume.created) : Buffer.alloc(7)
  const tree = buildTree(root, options.boot?.catalogPath)
  const metadata = placeMetadata(tree, options, recorded)
  const { files, volumeSectors } = placeFiles(tree, metadata.end)
  const placement: Placement = { dirs: metadata.dirs, continuations: metadata.continuations, files }
  const boot = await bootImages(tree, options, metadata.descriptors.primary, files)
  const metadataBytes = renderMetadata(tree, options, metadata, placement, volumeSectors, recorded, boot)
  const { segments, size } = assembleSegments(tree, options, metadataBytes, metadata.end, volumeSectors, boot.patched, files)
  return {
    segments,
    size,
    volumeSectors,
    files: new Map(tree.files.map(f => [f.path, { lba: files.get(f)!, size: f.size }]))
  }
}

/** Phase 1: the tree as it will be recorded (names, order), with nothing placed yet. */
interface Tree {
  root: Dir
  /** Breadth-first, the order of the path tables and directory extents. */
  dirs: Dir[]
  files: File[]
  /** Depth-first, the order of file data. */
  ordered: File[]
  byPath: Map<string, File>
}

function buildTree (root: IsoNode, catalogPath: string | undefined): Tree {
  const rootDir = buildModel(root, catalogPath)
  const dirs = breadthFirst(rootDir)
  dirs.forEach((dir, i) => { dir.number = i + 1 })
  const files = dirs.flatMap(dir => dir.files)
  return { root: rootDir, dirs, files, ordered: depthFirstFiles(rootDir), byPath: new Map(files.map(f => [f.path, f] as const)) }
}

type PathTable = ReturnType<typeof pathTable>

/**
 * Phase 2: every metadata sector placed (descriptors, path tables, directory
 * extents, continuation areas); directories know their LBA and size.
 */
interface MetadataLayout {
  descriptors: { primary: number, bootRecord?: number, joliet?: number, terminator: number }
  tables: { primary: PathTable, joliet: PathTable, l: number, m: number, jl: number, jm: number }
  records: { primary: Map<Dir, SizedRecord[]>, joliet: Map<Dir, SizedRecord[]> }
  dirs: Placement['dirs']
  continuations: ContinuationPlaces
  /** The first sector after the metadata. */
  end: number
}

function placeMetadata (tree: Tree, options: IsoWriteOptions, recorded: Buffer): MetadataLayout {
  const { dirs } = tree
  // Descriptor sectors: PVD, boot record, Joliet SVD, terminator.
  let lba = 16
  const primary = lba++
  const bootRecord = options.boot !== undefined ? lba++ : undefined
  const joliet = options.joliet ? lba++ : undefined
  const terminator = lba++

  const placed: Placement['dirs'] = { primary: new Map(), joliet: new Map() }
  const primaryTable = pathTable(dirs, d => d.primaryId, d => placed.primary.get(d)!.lba)
  const jolietTable = pathTable(dirs, d => d.jolietId, d => placed.joliet.get(d)!.lba)
  const l = lba; lba += sectorsFor(primaryTable.size)
  const m = lba; lba += sectorsFor(primaryTable.size)
  let jl = 0
  let jm = 0
  if (options.joliet) {
    jl = lba; lba += sectorsFor(jolietTable.size)
    jm = lba; lba += sectorsFor(jolietTable.size)
  }

  // Directory records: sizes first (they do not depend on LBAs), then LBAs.
  const continuations: Continuation[] = []
  const primaryRecords = new Map(dirs.map(dir => [dir, directoryRecords(dir, false, options.rockRidge, recorded, continuations)] as const))
  const jolietRecords = new Map(options.joliet ? dirs.map(dir => [dir, directoryRecords(dir, true, false, recorded, continuations)] as const) : [])
  for (const [records, places] of [[primaryRecords, placed.primary], [jolietRecords, placed.joliet]] as const) {
    for (const [dir, dirRecords] of records) {
      const size = packedSize(dirRecords)
      places.set(dir, { lba, size })
      lba += sectorsFor(size)
    }
  }

  // Continuation areas, packed without crossing sector boundaries.
  let ceOffset = 0
  const places: ContinuationPlaces = new Map()
  for (const blob of continuations) {
    if (ceOffset + blob.data.length > SECTOR) { lba++; ceOffset = 0 }
    places.set(blob, { lba, offset: ceOffset })
    ceOffset += blob.data.length
  }
  if (continuations.length > 0) lba++

  return {
    descriptors: { primary, ...(bootRecord !== undefined ? { bootRecord } : {}), ...(joliet !== undefined ? { joliet } : {}), terminator },
    tables: { primary: primaryTable, joliet: jolietTable, l, m, jl, jm },
    records: { primary: primaryRecords, joliet: jolietRecords },
    dirs: placed,
    continuations: places,
    end: lba
  }
}

/** Phase 3: file data in depth-first order of the primary tree, after the metadata. */
function placeFiles (tree: Tree, start: number): { files: Map<File, number>, volumeSectors: number } {
  const files = new Map<File, number>()
  let lba = start
  for (const file of tree.ordered) {
    files.set(file, file.size === 0 ? 0 : lba)
    lba += sectorsFor(file.size)
  }
  return { files, volumeSectors: lba }
}

/** Phase 4: El Torito: the catalog, load sizes and boot-info-tables, now that files are placed. */
async function bootImages (
  tree: Tree, options: IsoWriteOptions, pvdLba: number, files: Map<File, number>
): Promise<{ catalogLba?: number, patched: Map<File, Buffer> }> {
  const patched = new Map<File, Buffer>()
  if (options.boot === undefined) return { patched }
  const entries: BootEntry[] = []
  for (const spec of options.boot.entries) {
    const file = tree.byPath.get(spec.path)
    if (file === undefined) throw new IsoFormatError(`El Torito: boot image ${spec.path} is not in the tree`)
    const loadSectors = spec.loadSectors === 'image' ? Math.min(0xffff, sectorsFor(file.size) * 4) : spec.loadSectors
    entries.push({
      platform: spec.platform,
      bootable: true,
      mediaType: spec.mediaType ?? 0,
      loadSegment: spec.loadSegment ?? 0,
      systemType: spec.systemType ?? 0,
      loadSectors,
      lba: files.get(file)!
    })
    if (spec.bootInfoTable === true) {
      if (file.size > 16 << 20) throw new IsoFormatError(`El Torito: boot image ${spec.path} is too large for a boot-info-table`)
      const data = Buffer.from(await options.readContent(file.content))
      if (data.length < 64) throw new IsoFormatError(`El Torito: boot image ${spec.path} is too small for a boot-info-table`)
      writeBootInfoTable(data, pvdLba, files.get(file)!)
      patched.set(file, data)
    }
  }
  const catalogFile = tree.byPath.get(options.boot.catalogPath)!
  patched.set(catalogFile, buildBootCatalog(entries))
  return { catalogLba: files.get(catalogFile)!, patched }
}

/** Phase 5: the bytes of every metadata sector, from sector 16 to the end of the metadata. */
function renderMetadata (
  tree: Tree, options: IsoWriteOptions, layout: MetadataLayout, placement: Placement, volumeSectors: number, recorded: Buffer, boot: { catalogLba?: number }
): Buffer {
  const { root, dirs } = tree
  const { descriptors, tables, records } = layout
  const { primary, joliet } = placement.dirs
  const metadata = Buffer.alloc((layout.end - 16) * SECTOR)
  const put = (atLba: number, data: Buffer, offset = 0) => data.copy(metadata, (atLba - 16) * SECTOR + offset)
  put(descriptors.primary, volumeDescriptor(1, options.volume, false, {
    volumeSectors, pathTableSize: tables.primary.size, lPathTable: tables.l, mPathTable: tables.m, root: rootRecord(primary.get(root)!, recorded)
  }))
  if (descriptors.bootRecord !== undefined) put(descriptors.bootRecord, bootRecord(boot.catalogLba!))
  if (descriptors.joliet !== undefined) {
    put(descriptors.joliet, volumeDescriptor(2, options.volume, true, {
      volumeSectors, pathTableSize: tables.joliet.size, lPathTable: tables.jl, mPathTable: tables.jm, root: rootRecord(joliet.get(root)!, recorded)
    }))
  }
  put(descriptors.terminator, terminator())
  put(tables.l, tables.primary.build(false))
  put(tables.m, tables.primary.build(true))
  if (options.joliet) {
    put(tables.jl, tables.joliet.build(false))
    put(tables.jm, tables.joliet.build(true))
  }
  for (const dir of dirs) {
    put(primary.get(dir)!.lba, packRecords(records.primary.get(dir)!, false, placement))
    if (options.joliet) put(joliet.get(dir)!.lba, packRecords(records.joliet.get(dir)!, true, placement))
  }
  for (const [blob, place] of placement.continuations) put(place.lba, blob.data, place.offset)
  return metadata
}

/** Phase 6: the image as segments in LBA order: system area, metadata, file data, then what isohybrid adds. */
function assembleSegments (
  tree: Tree, options: IsoWriteOptions, metadata: Buffer, metadataEnd: number, volumeSectors: number, patched: Map<File, Buffer>, files: Map<File, number>
): { segments: Segment[], size: number } {
  const segments: Segment[] = []
  const push = (segment: Segment) => {
    const last = segments[segments.length - 1]
    if (segment.kind === 'zero' && last?.kind === 'zero') { last.length += segment.length; return }
    if (segment.kind === 'zero' && segment.length === 0) return
    segments.push(segment)
  }
  const lbaOfPath = (path: string): number | undefined => { const file = tree.byPath.get(path); return file !== undefined ? files.get(file) : undefined }
  const hybridLayout = options.hybrid !== undefined ? hybrid(options.hybrid, lbaOfPath, volumeSectors) : undefined
  if (hybridLayout !== undefined) push({ kind: 'buffer', data: buildSystemArea(hybridLayout) })
  else push({ kind: 'zero', length: SYSTEM_AREA_SIZE })
  push({ kind: 'buffer', data: metadata })
  let position = metadataEnd * SECTOR
  for (const file of tree.ordered) {
    if (file.size === 0) continue
    const start = files.get(file)! * SECTOR
    push({ kind: 'zero', length: start - position })
    const data = patched.get(file)
    if (data !== undefined) push({ kind: 'buffer', data })
    else push(file.content.kind === 'buffer' ? { kind: 'buffer', data: file.content.data } : { ...file.content })
    position = start + file.size
  }
  push({ kind: 'zero', length: volumeSectors * SECTOR - position })
  let size = volumeSectors * SECTOR
  if (hybridLayout !== undefined) {
    const backup = hybridLayout.gpt !== undefined ? buildBackupGpt(hybridLayout) : undefined
    push({ kind: 'zero', length: hybridLayout.imageSize - size - (backup?.length ?? 0) })
    if (backup !== undefined) push({ kind: 'buffer', data: backup })
    size = hybridLayout.imageSize
  }
  return { segments, size }
}

// --- model ---

function buildModel (root: IsoNode, catalogPath: string | undefined): Dir {
  const rootDir = newDir(root, '/', undefined, Buffer.from([0]), Buffer.from([0]))
  const fill = (dir: Dir, depth: number) => {
    if (depth > 64) throw new IsoFormatError(`directory ${dir.path}: nesting deeper than 64`)
    const nodes = [...(dir.node.children ?? [])]
    if (catalogPath !== undefined && parentPath(catalogPath) === dir.path) {
      const name = catalogPath.slice(catalogPath.lastIndexOf('/') + 1)
      const index = nodes.findIndex(n => n.name === name)
      const catalogNode: IsoNode = { ...(index >= 0 ? nodes[index]! : { name }), content: { kind: 'buffer', data: Buffer.alloc(SECTOR) } }
      delete catalogNode.children
      if (index >= 0) nodes[index] = catalogNode
      else nodes.push(catalogNode)
    }
    const names = new Set<string>()
    const taken = new Set<string>()
    // Source primary names first, so a generated name never steals one.
    const sorted = [...nodes].sort((a, b) => Number(b.primaryName !== undefined) - Number(a.primaryName !== undefined))
    for (const node of sorted) {
      if (node.name === '' || node.name.includes('/') || names.has(node.name)) {
        throw new IsoFormatError(`directory ${dir.path}: invalid or duplicate name ${JSON.stringify(node.name)}`)
      }
      names.add(node.name)
      const isDirectory = node.children !== undefined
      const primary = uniquePrimaryName(node.name, isDirectory, taken, node.primaryName)
      const path = `${dir.path === '/' ? '' : dir.path}/${node.name}`
      const primaryId = Buffer.from(primary, 'latin1')
      const jolietId = encodeUcs2(jolietName(node.name))
      if (isDirectory) {
        dir.dirs.push(newDir(node, path, dir, primaryId, jolietId))
      } else {
        if (node.content === undefined) throw new IsoFormatError(`file ${path}: no content`)
        const size = node.content.kind === 'buffer' ? node.content.data.length : node.content.length
        dir.files.push({ node, path, primaryId, jolietId, size, content: node.content })
      }
    }
    dir.dirs.sort((a, b) => compareFileIdentifiers(a.primaryId, b.primaryId))
    dir.files.sort((a, b) => compareFileIdentifiers(a.primaryId, b.primaryId))
    for (const sub of dir.dirs) fill(sub, depth + 1)
  }
  fill(rootDir, 0)
  return rootDir
}

function newDir (node: IsoNode, path: string, parent: Dir | undefined, primaryId: Buffer, jolietId: Buffer): Dir {
  return { node, path, parent, dirs: [], files: [], primaryId, jolietId, number: 0 }
}

function parentPath (path: string): string {
  const at = path.lastIndexOf('/')
  return at <= 0 ? '/' : path.slice(0, at)
}

function breadthFirst (root: Dir): Dir[] {
  const out: Dir[] = [root]
  for (let i = 0; i < out.length; i++) out.push(...out[i]!.dirs)
  return out
}

function depthFirstFiles (dir: Dir): File[] {
  return [...dir.files, ...dir.dirs.flatMap(depthFirstFiles)]
}

/** Children in the order of the directory's records: identifiers ascending. */
function childrenOf (dir: Dir, joliet: boolean): Child[] {
  const children: Child[] = [...dir.dirs.map(d => ({ dir: d })), ...dir.files.map(f => ({ file: f }))]
  const id = (c: Child) => 'dir' in c ? (joliet ? c.dir.jolietId : c.dir.primaryId) : (joliet ? c.file.jolietId : c.file.primaryId)
  return children.sort((a, b) => compareFileIdentifiers(id(a), id(b)))
}

// --- directory records ---

function directoryRecords (dir: Dir, joliet: boolean, rockRidge: boolean, recorded: Buffer, continuations: Continuation[]): SizedRecord[] {
  const dirMode = (d: Dir) => d.node.mode ?? 0o40555
  const records: SizedRecord[] = []
  const susp = (node: IsoNode, mode: number, nlink: number, extra: Buffer[], name?: string): Buffer[] => {
    if (!rockRidge) return []
    const entries = [...extra, pxEntry(mode, nlink, node.uid ?? 0, node.gid ?? 0), tfEntry(node.timestamps ?? defaultTimestamps(node.recorded ?? recorded))]
    if (name !== undefined) entries.push(...nmEntries(name))
    return entries
  }
  const nlinkOf = (d: Dir) => 2 + d.dirs.length
  const self = dir
  const parent = dir.parent ?? dir
  const isRoot = dir.parent === undefined
  records.push(sizeRecord(Buffer.from([0]), FLAG.directory, { dir: self }, self.node.recorded ?? recorded,
    susp(self.node, dirMode(self), nlinkOf(self), isRoot && rockRidge ? [spEntry()] : []), isRoot && rockRidge ? [erEntry()] : [], continuations))
  records.push(sizeRecord(Buffer.from([1]), FLAG.directory, { dir: parent }, parent.node.recorded ?? recorded,
    susp(parent.node, dirMode(parent), nlinkOf(parent), []), [], continuations))
  for (const child of childrenOf(dir, joliet)) {
    if ('dir' in child) {
      const d = child.dir
      records.push(sizeRecord(joliet ? d.jolietId : d.primaryId, FLAG.directory | (d.node.hidden === true ? FLAG.hidden : 0),
        { dir: d }, d.node.recorded ?? recorded, susp(d.node, dirMode(d), nlinkOf(d), [], d.node.name), [], continuations))
      continue
    }
    const f = child.file
    const id = joliet ? f.jolietId : f.primaryId
    const hidden = f.node.hidden === true ? FLAG.hidden : 0
    const extentCount = Math.max(1, Math.ceil(f.size / MAX_EXTENT))
    for (let i = 0; i < extentCount; i++) {
      const last = i === extentCount - 1
      records.push(sizeRecord(id, hidden | (last ? 0 : FLAG.multiExtent), { file: f, extent: i },
        f.node.recorded ?? recorded, i === 0 ? susp(f.node, f.node.mode ?? 0o100444, 1, [], f.node.name) : [], [], continuations))
    }
  }
  return records
}

/**
 * One directory record, sized. System use entries that do not fit the
 * 255-byte record move to a continuation area, linked by a CE entry.
 */
function sizeRecord (identifier: Buffer, flags: number, target: RecordTarget, recorded: Buffer,
  entries: Buffer[], forcedContinuation: Buffer[], continuations: Continuation[]): SizedRecord {
  const room = MAX_RECORD_LENGTH - systemUseOffset(identifier.length)
  const inRecord: Buffer[] = []
  const spilled: Buffer[] = [...forcedContinuation]
  const total = entries.reduce((n, e) => n + e.length, 0)
  if (spilled.length === 0 && total <= room) {
    inRecord.push(...entries)
  } else {
    let used = CE_ENTRY_LENGTH
    for (const entry of entries) {
      if (spilled.length === forcedContinuation.length && used + entry.length <= room) { inRecord.push(entry); used += entry.length } else spilled.push(entry)
    }
  }
  let continuation: Continuation | undefined
  if (spilled.length > 0) {
    continuation = { data: Buffer.concat(spilled) }
    if (continuation.data.length > SECTOR) throw new IsoFormatError('Rock Ridge: system use data larger than one continuation sector')
    continuations.push(continuation)
  }
  const systemUseLength = inRecord.reduce((n, e) => n + e.length, 0) + (continuation !== undefined ? CE_ENTRY_LENGTH : 0)
  const length = directoryRecordLength(identifier.length, systemUseLength)
  if (length > MAX_RECORD_LENGTH) throw new IsoFormatError(`directory record for ${identifier.toString('latin1')} is longer than ${MAX_RECORD_LENGTH} bytes`)
  return { identifier, flags, recorded, target, systemUse: inRecord, ...(continuation !== undefined ? { continuation } : {}), length }
}

/** The record's bytes, now that every LBA and continuation area is placed. */
function renderRecord (record: SizedRecord, joliet: boolean, placement: Placement): Buffer {
  const { target } = record
  let lba: number
  let size: number
  if ('dir' in target) {
    ({ lba, size } = (joliet ? placement.dirs.joliet : placement.dirs.primary).get(target.dir)!)
  } else {
    const { file, extent } = target
    const last = extent === Math.max(1, Math.ceil(file.size / MAX_EXTENT)) - 1
    lba = file.size === 0 ? 0 : placement.files.get(file)! + extent * (MAX_EXTENT / SECTOR)
    size = last ? file.size - extent * MAX_EXTENT : MAX_EXTENT
  }
  const systemUse = [...record.systemUse]
  if (record.continuation !== undefined) {
    const place = placement.continuations.get(record.continuation)!
    systemUse.push(ceEntry({ lba: place.lba, offset: place.offset, length: record.continuation.data.length }))
  }
  return writeDirectoryRecord({ lba, size, recorded: record.recorded, flags: record.flags, identifier: record.identifier, systemUse: Buffer.concat(systemUse) })
}

function packedSize (records: SizedRecord[]): number {
  let offset = 0
  for (const r of records) {
    if ((offset % SECTOR) + r.length > SECTOR) offset = (Math.floor(offset / SECTOR) + 1) * SECTOR
    offset += r.length
  }
  return sectorsFor(offset) * SECTOR
}

/** A directory's records packed into its sectors (a record never crosses a sector boundary). */
function packRecords (records: SizedRecord[], joliet: boolean, placement: Placement): Buffer {
  const out = Buffer.alloc(packedSize(records))
  let offset = 0
  for (const r of records) {
    if ((offset % SECTOR) + r.length > SECTOR) offset = (Math.floor(offset / SECTOR) + 1) * SECTOR
    renderRecord(r, joliet, placement).copy(out, offset)
    offset += r.length
  }
  return out
}

function rootRecord ({ lba, size }: Extent, recorded: Buffer): DirectoryRecord {
  return { lba, size, recorded, flags: FLAG.directory, identifier: Buffer.from([0]), systemUse: Buffer.alloc(0) }
}

// --- path tables ---

/** A tree's path table: its size is known before the directories are placed, its records only after. */
function pathTable (dirs: Dir[], id: (d: Dir) => Buffer, lba: (d: Dir) => number) {
  return {
    size: pathTableSize(dirs.map(d => id(d).length)),
    build (bigEndian: boolean): Buffer {
      return writePathTable(dirs.map(d => ({ identifier: id(d), lba: lba(d), parent: d.parent === undefined ? 1 : d.parent.number })), bigEndian)
    }
  }
}

// --- descriptors ---

function volumeDescriptor (type: 1 | 2, volume: VolumeIdentity, joliet: boolean, layout: DescriptorLayout): Buffer {
  const d = Buffer.alloc(SECTOR)
  const template = joliet ? volume.jolietTemplate : volume.primaryTemplate
  if (template !== undefined) {
    template.copy(d, 8, 8, 72)
    template.copy(d, 190, 190, 882)
  } else {
    const text = ([offset, length]: readonly [number, number], value: string) => joliet
      ? writePadded(d, offset, length, encodeUcs2(value.padEnd(length / 2, ' ')).subarray(0, length))
      : writePadded(d, offset, length, value)
    text(DESCRIPTOR.systemId, volume.systemId)
    text(DESCRIPTOR.volumeId, volume.volumeId)
    text(DESCRIPTOR.volumeSetId, volume.volumeSetId)
    text(DESCRIPTOR.publisherId, volume.publisherId ?? '')
    text(DESCRIPTOR.preparerId, volume.preparerId ?? '')
    text(DESCRIPTOR.applicationId, volume.applicationId ?? '')
    text(DESCRIPTOR.copyrightFile, '')
    text(DESCRIPTOR.abstractFile, '')
    text(DESCRIPTOR.bibliographicFile, '')
    volume.created.copy(d, DESCRIPTOR.created[0])
    volume.created.copy(d, DESCRIPTOR.modified[0])
    Buffer.from('0000000000000000\0', 'latin1').copy(d, DESCRIPTOR.expires[0])
    Buffer.from('0000000000000000\0', 'latin1').copy(d, DESCRIPTOR.effective[0])
    d[DESCRIPTOR.fileStructureVersion] = 1
  }
  d[0] = type
  d.write('CD001', 1, 'latin1')
  d[6] = 1
  d.fill(0, DESCRIPTOR.escapes, DESCRIPTOR.setSize)
  if (joliet) d.write('%/E', DESCRIPTOR.escapes, 'latin1')
  writeDescriptorLayout(d, layout)
  return d
}

function bootRecord (catalogLba: number): Buffer {
  const d = Buffer.alloc(SECTOR)
  d[0] = 0
  d.write('CD001', 1, 'latin1')
  d[6] = 1
  d.write('EL TORITO SPECIFICATION', 7, 'latin1')
  d.writeUInt32LE(catalogLba, 71)
  return d
}

function terminator (): Buffer {
  const d = Buffer.alloc(SECTOR)
  d[0] = 255
  d.write('CD001', 1, 'latin1')
  d[6] = 1
  return d
}

/** El Torito boot-info-table at byte 8: PVD LBA, file LBA, file length, sum of the LE words from byte 64. */
function writeBootInfoTable (data: Buffer, pvdLba: number, fileLba: number): void {
  let sum = 0
  for (let i = 64; i + 4 <= data.length; i += 4) sum = (sum + data.readUInt32LE(i)) >>> 0
  const tail = data.length % 4
  if (tail !== 0) {
    const last = Buffer.alloc(4)
    data.copy(last, 0, data.length - tail)
    sum = (sum + last.readUInt32LE(0)) >>> 0
  }
  data.writeUInt32LE(pvdLba, 8)
  data.writeUInt32LE(fileLba, 12)
  data.writeUInt32LE(data.length, 16)
  data.writeUInt32LE(sum, 20)
  data.fill(0, 24, 64)
}

/** ISO 9660 17-byte date -> 7-byte directory record date. */
function recordDate (date: Buffer): Buffer {
  const text = date.toString('latin1', 0, 16)
  const n = (from: number, len: number) => Number(text.slice(from, from + len)) || 0
  const year = n(0, 4)
  if (year === 0) return Buffer.alloc(7)
  return Buffer.from([year - 1900, n(4, 2), n(6, 2), n(8, 2), n(10, 2), n(12, 2), date[16]!])
}

/** TF with modify, access and attribute-change times all set to the record date. */
function defaultTimestamps (recorded: Buffer): Buffer {
  return Buffer.concat([Buffer.from([0x0e]), recorded, recorded, recorded])
}

// --- isohybrid ---

function hybrid (source: HybridSource, lbaOfPath: (path: string) => number | undefined, volumeSectors: number): HybridLayout | undefined {
  const { mbr, gpt } = source.systemArea
  if (mbr === undefined) return undefined
  const isoBytes = volumeSectors * SECTOR
  let imageSize = Math.ceil(isoBytes / HYBRID_ALIGN) * HYBRID_ALIGN
  if (gpt !== undefined && imageSize - isoBytes < gptBackupBytes(gpt.entryCount)) imageSize += HYBRID_ALIGN
  const sourceVolume512 = source.volumeSectors * 4
  const sourceImage512 = source.imageSize / 512
  const remap = (start512: number, length512: number): { start: number, length: number } => {
    // A partition that starts inside the system area is a label over the image, not a file: isohybrid's from
    // sector 0, or xorriso's --protective-msdos-label (grub-mkrescue's, as on ppc64le) from sector 1 to the end.
    if (start512 < SYSTEM_AREA_SIZE / 512) {
      if (start512 + length512 === sourceImage512) return { start: start512, length: imageSize / 512 - start512 }
      if (start512 + length512 === sourceVolume512) return { start: start512, length: volumeSectors * 4 - start512 }
      if (start512 === 0) return { start: 0, length: length512 }
      throw new IsoFormatError(`isohybrid: partition at sector ${start512} claims neither the image nor a file`)
    }
    const path = start512 % 4 === 0 ? source.pathAtLba(start512 / 4) : undefined
    const lba = path !== undefined ? lbaOfPath(path) : undefined
    if (lba === undefined) throw new IsoFormatError(`isohybrid: partition at sector ${start512} does not start at a file`)
    return { start: lba * 4, length: length512 }
  }
  const bootCode = Buffer.from(mbr.bootCode)
  // isohdpfx keeps the 512-byte LBA of isolinux.bin at 432; follow the file to its new place.
  const bootPointer = bootCode.readUInt32LE(432)
  if (bootPointer !== 0 && bootPointer % 4 === 0) {
    const path = source.pathAtLba(bootPointer / 4)
    const lba = path !== undefined ? lbaOfPath(path) : undefined
    if (lba !== undefined) bootCode.writeUInt32LE(lba * 4, 432)
  }
  const layout: HybridLayout = {
    imageSize,
    mbrBootCode: bootCode,
    diskSignature: mbr.diskSignature,
    mbrPartitions: mbr.partitions.map(p => {
      const { start, length } = remap(p.startLba, p.sectors)
      return { status: p.status, type: p.type, startLba: start, sectors: length }
    })
  }
  if (gpt !== undefined) {
    layout.gpt = {
      diskGuid: gpt.diskGuid,
      entryCount: gpt.entryCount,
      partitions: gpt.partitions.map(p => {
        const { start, length } = remap(p.firstLba, p.lastLba - p.firstLba + 1)
        return { ...p, firstLba: start, lastLba: start + length - 1 }
      })
    }
  }
  return layout
}
