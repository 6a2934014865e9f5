import type { ComposedImage } from '../compose/composed-image.ts'
import { createHash } from 'node:crypto'
import { customize, type HostContent, type IsoKind, type IsoTemplate } from '../coreos/customize.ts'
import { initrdAddrsize, pxeInitrd } from '../coreos/pxe.ts'
import { ArtifactNotFound, ImageNotReady, NmstateUnavailable, NoAddrsize, NoInitrd, TypeNotAvailable, VersionNotFound, VersionRequired, VersionUnknown } from '../errors.ts'
import type { ImageStore, PreparedImage } from '../store/image-store.ts'
import type { OsImageEntry } from '../store/os-image-entry.ts'
import { needsNmstate } from '../store/image-store.ts'
import type { Credential, InfraEnvSource } from '../upstream/infra-env-source.ts'

const CUSTOMIZED_PER_TEMPLATE = 256

/**
 * Recently customized images by content, so the Range requests of one host
 * (a BMC sends thousands) reuse one image instead of re-compressing the
 * Ignition archive each time.
 */
class CustomizedImages {
  readonly #byTemplate = new WeakMap<IsoTemplate, Map<string, ComposedImage>>()

  get (template: IsoTemplate, content: HostContent): ComposedImage {
    const ramdisk = content.ramdisk !== undefined ? digest(content.ramdisk) : ''
    const key = `${digest(content.ignition)}:${ramdisk}:${(content.kargs ?? []).join('\0')}`
    let images = this.#byTemplate.get(template)
    if (images === undefined) { images = new Map(); this.#byTemplate.set(template, images) }
    const cached = images.get(key)
    if (cached !== undefined) {
      images.delete(key)
      images.set(key, cached)
      return cached
    }
    const image = customize(template, content)
    images.set(key, image)
    if (images.size > CUSTOMIZED_PER_TEMPLATE) images.delete(images.keys().next().value!)
    return image
  }
}

const customizedImages = new CustomizedImages()

// Cached upstream answers come back as the same Buffer objects: hash each one once.
const digests = new WeakMap<Buffer, string>()
function digest (data: Buffer): string {
  let value = digests.get(data)
  if (value === undefined) {
    value = createHash('sha256').update(data).digest('base64url')
    digests.set(data, value)
  }
  return value
}

/** A Map, not an object: client input never reaches the prototype ("constructor", "__proto__"). */
export const ISO_FILENAMES: ReadonlyMap<string, IsoKind> = new Map([
  ['full.iso', 'full-iso'],
  ['minimal.iso', 'minimal-iso'],
  ['disconnected.iso', 'disconnected-iso']
])

/** The file name each kind of ISO is served under (the inverse of ISO_FILENAMES). */
export const ISO_FILENAME_OF: ReadonlyMap<IsoKind, string> = new Map([...ISO_FILENAMES].map(([name, kind]) => [kind, name]))

export interface Deps { store: ImageStore, source: InfraEnvSource }

export interface Served { image: ComposedImage, lastModified: Date, filename: string, cacheControl?: string }

function ready (store: ImageStore, entry: OsImageEntry): PreparedImage {
  const prepared = store.get(store.keyOf(entry))
  if (prepared === undefined) {
    throw new ImageNotReady(entry.version, entry.cpuArchitecture)
  }
  return prepared
}

/**
 * A host with static networking (a ramdisk) on OpenShift >= 4.18 cannot boot
 * without nmstatectl: answer with the reason rather than an image that boots
 * with no network configuration.
 */
function requireNmstate (entry: OsImageEntry, prepared: PreparedImage): void {
  if (!needsNmstate(entry) || prepared.nmstate !== undefined) return
  throw new NmstateUnavailable(prepared.key, entry.openshiftVersion, prepared.nmstateError ?? 'it could not be extracted')
}

/** Finds the entry an ISO request names, and refuses impossible types before any upstream call. */
export function resolveIsoEntry (store: ImageStore, version: string, arch: string, type: IsoKind): OsImageEntry {
  const wanted = type === 'disconnected-iso' ? 'disconnected-iso' : 'full-iso'
  const entry = store.find(version, arch, wanted)
  if (entry === undefined) {
    if (store.find(version, arch) !== undefined) throw new TypeNotAvailable(`no ${type} is configured for version ${version} (${arch})`)
    throw new VersionNotFound(version, arch)
  }
  if (type === 'minimal-iso' && arch === 's390x') throw new TypeNotAvailable('there is no minimal ISO for s390x')
  return entry
}

/** The host's ISO: template + Ignition + ramdisk (minimal) + kernel arguments. */
export async function customizedIso (deps: Deps, params: { imageId: string, version: string, arch: string, type: IsoKind, credential?: Credential, signal?: AbortSignal }): Promise<Served> {
  const entry = resolveIsoEntry(deps.store, params.version, params.arch, params.type)
  const prepared = ready(deps.store, entry)
  const template = prepared.templates[params.type]
  if (template === undefined) throw new TypeNotAvailable(`no ${params.type} for version ${params.version} (${params.arch})`)
  const { source } = deps
  const [ignition, ramdisk, kargs] = await Promise.all([
    source.ignition(params.imageId, params.type, params.credential, params.signal),
    params.type === 'minimal-iso' ? source.ramdisk(params.imageId, params.credential, params.signal) : Promise.resolve(undefined),
    source.kernelArguments(params.imageId, params.credential, params.signal)
  ])
  if (ramdisk !== undefined) requireNmstate(entry, prepared)
  const image = customizedImages.get(template, { ignition: ignition.data, ...(ramdisk !== undefined ? { ramdisk } : {}), kargs })
  return {
    image,
    lastModified: ignition.lastModified ?? prepared.lastModified,
    filename: params.type === 'disconnected-iso' ? `agent-ove.${params.arch}.iso` : `${params.imageId}-discovery.iso`
  }
}

function pxeEntry (store: ImageStore, version: string | undefined, arch: string): OsImageEntry {
  if (version === undefined || version === '') throw new VersionRequired()
  const entry = store.find(version, arch, 'full-iso')
  if (entry === undefined) throw new VersionUnknown(version, arch)
  return entry
}

/** initrd.img + Ignition + ramdisk (+ nmstate with a ramdisk on 4.18+ entries), for PXE. */
export async function pxeInitrdImage (deps: Deps, params: { imageId: string, version?: string, arch: string, credential?: Credential, signal?: AbortSignal }): Promise<Served> {
  const entry = pxeEntry(deps.store, params.version, params.arch)
  const prepared = ready(deps.store, entry)
  if (prepared.initrd === undefined) throw new NoInitrd()
  const [ignition, ramdisk] = await Promise.all([
    deps.source.ignition(params.imageId, undefined, params.credential, params.signal),
    deps.source.ramdisk(params.imageId, params.credential, params.signal)
  ])
  if (ramdisk !== undefined) requireNmstate(entry, prepared)
  const image = pxeInitrd(prepared.initrd, {
    ignition: ignition.data,
    ...(ramdisk !== undefined ? { ramdisk } : {}),
    // nmstatectl applies the static network configuration the ramdisk carries: without one it is not needed.
    ...(ramdisk !== undefined && needsNmstate(entry) && prepared.nmstate !== undefined ? { nmstate: prepared.nmstate } : {})
  })
  return { image, lastModified: ignition.lastModified ?? prepared.lastModified, filename: `${params.imageId}-initrd.img` }
}

/** s390x initrd.addrsize: the ISO's load address and the size of the PXE initrd the same parameters give. */
export async function addrsizeImage (deps: Deps, params: { imageId: string, version?: string, credential?: Credential, signal?: AbortSignal }): Promise<{ data: Buffer, served: Omit<Served, 'image'> }> {
  const initrd = await pxeInitrdImage(deps, { ...params, arch: 's390x' })
  const prepared = ready(deps.store, pxeEntry(deps.store, params.version, 's390x'))
  if (prepared.artifacts.addrsizePrefix === undefined) throw new NoAddrsize()
  return {
    data: initrdAddrsize(prepared.artifacts.addrsizePrefix, initrd.image.size),
    served: { lastModified: initrd.lastModified, filename: `${params.imageId}-initrd.addrsize` }
  }
}

export const ARTIFACTS = ['rootfs', 'kernel', 'ins-file'] as const

/** A raw file of the full ISO: rootfs, kernel or (s390x) generic.ins. */
export async function bootArtifact (store: ImageStore, params: { artifact: string, version?: string, arch: string }): Promise<Served> {
  const entry = pxeEntry(store, params.version, params.arch)
  if (!(ARTIFACTS as readonly string[]).includes(params.artifact) || (params.artifact === 'ins-file' && params.arch !== 's390x')) {
    throw new ArtifactNotFound(`no boot artifact named ${params.artifact}`)
  }
  const prepared = ready(store, entry)
  const image = prepared.artifactImages[params.artifact as typeof ARTIFACTS[number]]
  if (image === undefined) throw new ArtifactNotFound(`the OS image has no ${params.artifact}`)
  const filename = params.artifact === 'rootfs' ? 'rootfs.img' : params.artifact === 'kernel' ? prepared.artifacts.kernelName : 'generic.ins'
  return {
    image,
    lastModified: prepared.lastModified,
    filename,
    // A version's artifacts never change: let caches and CDNs keep them.
    cacheControl: 'public, max-age=86400'
  }
}
