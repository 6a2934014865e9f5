import { ComposedImage } from '../compose/composed-image.ts'
import type { FilePool } from '../compose/file-pool.ts'
import { ImageWriter } from '../compose/image-writer.ts'
import { SECTOR } from '../iso9660/bytes.ts'
import type { IsoImage } from '../iso9660/reader.ts'
import { findNode, optionsFromImage, putNode, removeNode, treeFromImage } from '../iso9660/remaster.ts'
import { planIso, type IsoNode, type LayoutPlan } from '../iso9660/writer.ts'
import { findEmbedAreas, parseKargsJson, RAMDISK_PATH, type IsoView, type KargsJson } from './embed-areas.ts'
import type { IsoTemplate } from './customize.ts'
import { MinimalTemplateError } from '../errors.ts'

const RAMDISK_SIZE = 1 << 20
const NMSTATE_PATH = '/images/nmstate.img'
const ROOTFS_PATH = '/images/pxeboot/rootfs.img'
const GRUB_CANDIDATES = ['/EFI/redhat/grub.cfg', '/EFI/fedora/grub.cfg', '/EFI/centos/grub.cfg', '/boot/grub/grub.cfg']
const ISOLINUX = '/isolinux/isolinux.cfg'
const LIVEISO = /coreos\.liveiso=\S+ ?/g

export interface MinimalOptions {
  arch: string
  /** `{IMAGE_SERVICE_BASE_URL}/boot-artifacts/rootfs?arch=..&version=..` */
  rootfsUrl: string
  nmstate?: Buffer
}

interface Edit { at: number, remove: number, insert: string }

/** Kernel arguments of the minimal ISO: no liveiso (there is no rootfs on it), the rootfs URL instead. */
function minimalKargs (kargs: string, rootfsUrl: string): string {
  return `${kargs.replace(LIVEISO, '').trimEnd()} coreos.live.rootfs_url="${rootfsUrl}"`
}

/**
 * Edits grub.cfg or isolinux.cfg for the minimal ISO and tells where a
 * kargs area offset moved (edits before it shift it; edits inside it change
 * the area's text, which kargs.json's new default and size account for).
 */
export function editBootConfig (text: string, kind: 'grub' | 'isolinux', rootfsUrl: string, extraInitrds: readonly string[], kargsOffset?: number): { text: string, kargsOffset?: number } {
  const edits: Edit[] = []
  const lines = /[^\n]*\n?/g
  for (const match of text.matchAll(lines)) {
    const line = match[0].replace(/\n$/, '')
    if (line === '') continue
    const start = match.index
    const isKernelLine = kind === 'grub' ? /^\s*linux(efi)?\s/.test(line) : /^\s*append\s/.test(line)
    if (isKernelLine) {
      for (const live of line.matchAll(LIVEISO)) edits.push({ at: start + live.index, remove: live[0].length, insert: '' })
      edits.push({ at: start + line.length, remove: 0, insert: ` coreos.live.rootfs_url="${rootfsUrl}"` })
    }
    if (kind === 'grub' && /^\s*initrd(efi)?\s/.test(line)) {
      edits.push({ at: start + line.trimEnd().length, remove: 0, insert: extraInitrds.map(p => ` ${p}`).join('') })
    }
    if (kind === 'isolinux' && isKernelLine) {
      const initrd = /initrd=\S+/.exec(line)
      if (initrd !== null) edits.push({ at: start + initrd.index + initrd[0].length, remove: 0, insert: extraInitrds.map(p => `,${p}`).join('') })
    }
  }
  let out = text
  for (const edit of [...edits].sort((a, b) => b.at - a.at)) {
    out = out.slice(0, edit.at) + edit.insert + out.slice(edit.at + edit.remove)
  }
  if (kargsOffset === undefined) return { text: out }
  const shift = edits.filter(e => e.at < kargsOffset).reduce((n, e) => n + e.insert.length - e.remove, 0)
  return { text: out, kargsOffset: kargsOffset + shift }
}

/** kargs.json as the CoreOS builders write it: sorted keys, two-space indent, trailing newline. */
function serializeKargsJson (value: KargsJson): string {
  const files = value.files.map(f => {
    const entry: Record<string, unknown> = {}
    if (f.end !== undefined) entry.end = f.end
    entry.offset = f.offset
    if (f.pad !== undefined) entry.pad = f.pad
    entry.path = f.path
    return entry
  })
  return `${JSON.stringify({ default: value.default, files, size: value.size }, null, 2)}\n`
}

/**
 * Builds the minimal ISO as a plan over the full ISO: no rootfs.img, a 1 MiB
 * ramdisk placeholder, boot configs that fetch the rootfs from us, kargs.json
 * adjusted so kernel arguments can still be embedded. Reads only metadata.
 */
export async function buildMinimalTemplate (image: IsoImage, options: MinimalOptions, pool: FilePool): Promise<IsoTemplate> {
  if (/[$\\"\s]/.test(options.rootfsUrl)) {
    throw new MinimalTemplateError(`rootfs URL ${JSON.stringify(options.rootfsUrl)} may not contain '$', '\\', quotes or spaces`)
  }
  const tree = treeFromImage(image)
  if (!removeNode(tree, ROOTFS_PATH)) throw new MinimalTemplateError('the full ISO has no images/pxeboot/rootfs.img')
  const ignitionNode = findNode(tree, '/images/ignition.img')
  const stamp: Partial<IsoNode> = {
    ...(ignitionNode?.recorded !== undefined ? { recorded: ignitionNode.recorded } : {}),
    ...(ignitionNode?.timestamps !== undefined ? { timestamps: ignitionNode.timestamps } : {}),
    mode: 0o100444
  }
  putNode(tree, RAMDISK_PATH, { ...stamp, content: { kind: 'zero', length: RAMDISK_SIZE } })
  const extraInitrds = [RAMDISK_PATH]
  if (options.nmstate !== undefined) {
    putNode(tree, NMSTATE_PATH, { ...stamp, content: { kind: 'buffer', data: options.nmstate } })
    extraInitrds.push(NMSTATE_PATH)
  }

  const kargsEntry = image.lookup('/coreos/kargs.json')
  const kargsJson = kargsEntry !== undefined ? parseKargsJson((await image.readFile(kargsEntry)).toString('utf8')) : undefined
  const grubPath = GRUB_CANDIDATES.find(p => image.lookup(p) !== undefined)
  const configs: Array<[string, 'grub' | 'isolinux']> = []
  if (grubPath !== undefined) configs.push([grubPath, 'grub'])
  if (options.arch !== 'ppc64le' && image.lookup(ISOLINUX) !== undefined) configs.push([ISOLINUX, 'isolinux'])
  if (configs.length === 0) throw new MinimalTemplateError('the full ISO has neither grub.cfg nor isolinux.cfg')

  const newOffsets = new Map<string, number>()
  const editedTexts = new Map<string, string>()
  for (const [path, kind] of configs) {
    const text = (await image.readFile(image.lookup(path)!)).toString('latin1')
    const kargsOffset = kargsJson?.files.find(f => `/${f.path}` === path)?.offset
    const edited = editBootConfig(text, kind, options.rootfsUrl, extraInitrds, kargsOffset)
    putNode(tree, path, { content: { kind: 'buffer', data: Buffer.from(edited.text, 'latin1') } })
    editedTexts.set(path, edited.text)
    if (edited.kargsOffset !== undefined) newOffsets.set(path, edited.kargsOffset)
  }

  if (kargsJson !== undefined) {
    const newDefault = minimalKargs(kargsJson.default, options.rootfsUrl)
    const updated: KargsJson = {
      default: newDefault,
      size: kargsJson.size + newDefault.length - kargsJson.default.length,
      files: kargsJson.files.map(f => ({ ...f, offset: newOffsets.get(`/${f.path}`) ?? f.offset }))
    }
    for (const f of updated.files) {
      const text = editedTexts.get(`/${f.path}`)
      if (text !== undefined && !text.slice(f.offset, f.offset + updated.size).startsWith(newDefault + (f.end ?? '\n'))) {
        throw new MinimalTemplateError(`kernel arguments in ${f.path} do not match kargs.json after editing`)
      }
    }
    putNode(tree, '/coreos/kargs.json', { content: { kind: 'buffer', data: Buffer.from(serializeKargsJson(updated)) } })
  }

  const plan = await planIso(tree, await optionsFromImage(image))
  const composed = await ComposedImage.fromSegments(plan.segments, pool)
  return { kind: 'minimal-iso', arch: options.arch, image: composed, areas: await findEmbedAreas(planView(plan, composed)) }
}

/** The planned image seen through the same interface as an ISO file. */
function planView (plan: LayoutPlan, image: ComposedImage): IsoView {
  const byUpper = new Map([...plan.files].map(([path, f]) => [path.toUpperCase(), f]))
  const writer = new ImageWriter()
  return {
    lookup (path) {
      const normalized = `/${path.split('/').filter(p => p !== '').join('/')}`
      const file = plan.files.get(normalized) ?? byUpper.get(normalized.toUpperCase())
      return file === undefined ? undefined : { byteOffset: file.lba * SECTOR, size: file.size }
    },
    read: (offset, length) => writer.toBuffer(image, offset, offset + length)
  }
}
