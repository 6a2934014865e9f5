import { ComposedImage } from '../compose/composed-image.ts'
import type { FilePool } from '../compose/file-pool.ts'
import { EmbedAreaTooSmall, KargsUnsupported, NoIgnitionArea, NoRamdiskArea } from '../errors.ts'
import type { IsoImage } from '../iso9660/reader.ts'
import { findEmbedAreas, renderKargs, type EmbedArea, type EmbedAreas, type IsoView } from './embed-areas.ts'
import { ignitionArchive } from './ignition-archive.ts'

export type IsoKind = 'full-iso' | 'minimal-iso' | 'disconnected-iso'

/** An ISO every host's image derives from, with its embed areas located once. */
export interface IsoTemplate {
  kind: IsoKind
  arch: string
  image: ComposedImage
  areas: EmbedAreas
}

/** Per-host content from assisted-service (or the local InfraEnv directory). */
export interface HostContent {
  ignition: Buffer
  ramdisk?: Buffer
  kargs?: readonly string[]
}

export function isoImageView (image: IsoImage): IsoView {
  return {
    lookup: path => image.lookup(path),
    read: (offset, length) => image.readAt(offset, length)
  }
}

/** A full (or disconnected) ISO on disk as a template: one file segment. */
export async function fileTemplate (image: IsoImage, kind: IsoKind, arch: string, pool: FilePool): Promise<IsoTemplate> {
  const composed = await ComposedImage.fromSegments([{ kind: 'file', path: image.identity.path, offset: 0, length: image.identity.size }], pool)
  return { kind, arch, image: composed, areas: await findEmbedAreas(isoImageView(image)) }
}

function fit (area: EmbedArea, data: Buffer): void {
  if (data.length > area.length) {
    throw new EmbedAreaTooSmall(`${area.name} content of ${data.length} bytes does not fit the ${area.length}-byte embed area`)
  }
}

/**
 * The host's ISO: the template with the Ignition archive, the ramdisk and the
 * kernel arguments laid over their embed areas. Same size as the template;
 * nothing is copied.
 */
export function customize (template: IsoTemplate, content: HostContent): ComposedImage {
  const { areas } = template
  let image = template.image
  if (areas.ignition === undefined) throw new NoIgnitionArea()
  const archive = ignitionArchive(content.ignition)
  fit(areas.ignition, archive)
  image = image.patch(areas.ignition.offset, archive, areas.ignition.length)
  if (content.ramdisk !== undefined && content.ramdisk.length > 0) {
    if (areas.ramdisk === undefined) throw new NoRamdiskArea(template.kind)
    fit(areas.ramdisk, content.ramdisk)
    image = image.patch(areas.ramdisk.offset, content.ramdisk, areas.ramdisk.length)
  }
  const kargs = (content.kargs ?? []).map(k => k.trim()).filter(k => k !== '')
  if (kargs.length > 0) {
    if (areas.kargs.length === 0) {
      if (template.arch === 's390x') throw new KargsUnsupported('kargs cannot be modified in s390x architecture ISOs')
      throw new KargsUnsupported('this ISO has no kernel argument embed area')
    }
    for (const area of areas.kargs) image = image.patch(area.offset, renderKargs(area, kargs))
  }
  return image
}
