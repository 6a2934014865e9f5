import { open } from 'node:fs/promises'
import { SECTOR } from './bytes.ts'
import { PLATFORM } from './el-torito.ts'
import type { IsoEntry, IsoImage } from './reader.ts'
import type { BootImageSpec, IsoNode, IsoWriteOptions } from './writer.ts'
import type { Segment } from '../compose/segment.ts'
import { readFully } from '../io/read-fully.ts'

/**
 * The source ISO's tree as writer input: every file a byte range of the
 * source file, names, modes and dates kept. The boot catalog is left out (the
 * writer regenerates it).
 */
export function treeFromImage (image: IsoImage): IsoNode {
  const catalogLba = image.bootCatalog?.lba
  const convert = (entry: IsoEntry): IsoNode | undefined => {
    if (!entry.isDirectory && catalogLba !== undefined && entry.lba === catalogLba) return undefined
    const node: IsoNode = {
      name: entry.name,
      primaryName: entry.primaryName,
      recorded: entry.recorded
    }
    if (entry.rockRidge?.mode !== undefined) node.mode = entry.rockRidge.mode
    if (entry.rockRidge?.uid !== undefined) node.uid = entry.rockRidge.uid
    if (entry.rockRidge?.gid !== undefined) node.gid = entry.rockRidge.gid
    if (entry.rockRidge?.timestamps !== undefined) node.timestamps = entry.rockRidge.timestamps
    if ((entry.flags & 0x01) !== 0) node.hidden = true
    if (entry.isDirectory) {
      node.children = (entry.children ?? []).map(convert).filter((n): n is IsoNode => n !== undefined)
    } else {
      node.content = { kind: 'file', path: image.identity.path, offset: entry.byteOffset, length: entry.size }
    }
    return node
  }
  const root = convert(image.root)!
  root.recorded = image.root.recorded
  return root
}

/** Finds a node by real path in a writer tree. */
export function findNode (root: IsoNode, path: string): IsoNode | undefined {
  let node: IsoNode | undefined = root
  for (const part of path.split('/').filter(p => p !== '')) {
    node = node?.children?.find(child => child.name === part)
    if (node === undefined) return undefined
  }
  return node
}

/** Removes a node by real path; returns whether it was there. */
export function removeNode (root: IsoNode, path: string): boolean {
  const at = path.lastIndexOf('/')
  const parent = findNode(root, path.slice(0, at))
  const index = parent?.children?.findIndex(child => child.name === path.slice(at + 1)) ?? -1
  if (index < 0) return false
  parent!.children!.splice(index, 1)
  return true
}

/** Adds or replaces a file node under an existing directory. */
export function putNode (root: IsoNode, path: string, node: Omit<IsoNode, 'name'>): void {
  const at = path.lastIndexOf('/')
  const parent = findNode(root, path.slice(0, at))
  if (parent?.children === undefined) throw new Error(`no directory for ${path}`)
  const name = path.slice(at + 1)
  const index = parent.children.findIndex(child => child.name === name)
  const existing = index >= 0 ? parent.children[index] : undefined
  const merged: IsoNode = { ...(existing ?? {}), ...node, name }
  if (index >= 0) parent.children[index] = merged
  else parent.children.push(merged)
}

/** El Torito entries of the source, as paths, so the writer can re-point them. */
async function bootFromImage (image: IsoImage): Promise<IsoWriteOptions['boot']> {
  const catalog = image.bootCatalog
  if (catalog === undefined) return undefined
  const byLba = pathsByLba(image)
  const catalogPath = byLba.get(catalog.lba) ?? '/boot.catalog'
  const entries: BootImageSpec[] = []
  for (const entry of catalog.entries) {
    const path = byLba.get(entry.lba)
    if (path === undefined) continue
    const file = image.lookup(path)!
    const imageSectors = Math.min(0xffff, Math.ceil(file.size / SECTOR) * 4)
    const head = file.size >= 24 ? await image.readAt(file.byteOffset, 24) : Buffer.alloc(0)
    const bootInfoTable = entry.platform === PLATFORM.x86 && head.length === 24 &&
      head.readUInt32LE(8) === 16 && head.readUInt32LE(12) === entry.lba && head.readUInt32LE(16) === file.size
    entries.push({
      path,
      platform: entry.platform,
      loadSegment: entry.loadSegment,
      loadSectors: entry.loadSectors === imageSectors && entry.platform !== PLATFORM.x86 ? 'image' : entry.loadSectors,
      bootInfoTable,
      mediaType: entry.mediaType,
      systemType: entry.systemType
    })
  }
  return { catalogPath, entries }
}

/** Path of the file starting at each LBA (first one wins). */
function pathsByLba (image: IsoImage): Map<number, string> {
  const map = new Map<number, string>()
  for (const entry of image.walk()) {
    if (!entry.isDirectory && entry.size > 0 && !map.has(entry.lba)) map.set(entry.lba, entry.path)
  }
  return map
}

/** Writer options that reproduce the source's volume identity, boot setup and isohybrid layout. */
export async function optionsFromImage (image: IsoImage, reader: IsoWriteOptions['readContent'] = readContent): Promise<IsoWriteOptions> {
  const byLba = pathsByLba(image)
  const boot = await bootFromImage(image)
  return {
    volume: {
      systemId: image.primary.systemId,
      volumeId: image.primary.volumeId,
      volumeSetId: image.primary.volumeSetId,
      created: image.primary.created,
      primaryTemplate: image.primary.raw,
      ...(image.joliet !== undefined ? { jolietTemplate: image.joliet.raw } : {})
    },
    rockRidge: image.hasRockRidge,
    joliet: image.joliet !== undefined,
    ...(boot !== undefined ? { boot } : {}),
    ...(image.systemArea.mbr !== undefined && image.systemArea.mbr.partitions.length > 0
      ? {
          hybrid: {
            systemArea: image.systemArea,
            imageSize: image.identity.size,
            volumeSectors: image.primary.volumeSpaceSize,
            pathAtLba: (lba: number) => byLba.get(lba)
          }
        }
      : {}),
    readContent: reader
  }
}

/** Reads any writer content into memory (boot images only: they are small). */
export async function readContent (content: Segment): Promise<Buffer> {
  if (content.kind === 'buffer') return content.data
  if (content.kind === 'zero') return Buffer.alloc(content.length)
  const fh = await open(content.path, 'r')
  try {
    return await readFully(fh, content.length, content.offset, () => new Error(`${content.path} ended early`))
  } finally {
    await fh.close()
  }
}
