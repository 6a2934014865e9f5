import type { FilePool } from '../compose/file-pool.ts'
import { fileTemplate, type IsoKind, type IsoTemplate } from '../coreos/customize.ts'
import { buildMinimalTemplate } from '../coreos/minimal-template.ts'
import { rangeImage, type BootArtifacts } from '../coreos/pxe.ts'
import type { IsoImage } from '../iso9660/reader.ts'
import type { OsImageEntry } from './os-image-entry.ts'
import type { PreparedImage } from './store-types.ts'

/**
 * The ISOs an entry serves: its own kind, and for a full ISO (but on s390x)
 * the minimal one, which boots the rootfs from this service and carries
 * nmstatectl when there is one.
 */
export async function isoTemplates (iso: IsoImage, group: OsImageEntry, pool: FilePool,
  options: { imageServiceBaseUrl: string, nmstate?: Buffer | undefined }): Promise<Partial<Record<IsoKind, IsoTemplate>>> {
  const templates: Partial<Record<IsoKind, IsoTemplate>> = {}
  templates[group.type] = await fileTemplate(iso, group.type, group.cpuArchitecture, pool)
  if (group.type === 'full-iso' && group.cpuArchitecture !== 's390x') {
    const rootfsUrl = `${options.imageServiceBaseUrl}/boot-artifacts/rootfs?arch=${encodeURIComponent(group.cpuArchitecture)}&version=${encodeURIComponent(group.version)}`
    templates['minimal-iso'] = await buildMinimalTemplate(iso, {
      arch: group.cpuArchitecture, rootfsUrl, ...(options.nmstate !== undefined ? { nmstate: options.nmstate } : {})
    }, pool)
  }
  return templates
}

/** The boot artifacts as images read in place from the ISO: the PXE initrd's base and what /boot-artifacts serves. */
export async function artifactImages (artifacts: BootArtifacts, pool: FilePool): Promise<Pick<PreparedImage, 'initrd' | 'artifactImages'>> {
  const initrd = artifacts.initrd !== undefined ? await rangeImage(artifacts.initrd, pool) : undefined
  const images: PreparedImage['artifactImages'] = {}
  if (artifacts.rootfs !== undefined) images.rootfs = await rangeImage(artifacts.rootfs, pool)
  if (artifacts.kernel !== undefined) images.kernel = await rangeImage(artifacts.kernel, pool)
  if (artifacts.insFile !== undefined) images['ins-file'] = await rangeImage(artifacts.insFile, pool)
  return { ...(initrd !== undefined ? { initrd } : {}), artifactImages: images }
}
