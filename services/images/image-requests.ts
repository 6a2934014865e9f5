import { ComposedImage } from '../compose/composed-image.ts'
import { createHash } from 'node:crypto'
import { customize, type HostContent, type IsoKind, type IsoTemplate } from '../coreos/customize.ts'
import { initrdAddrsize, pxeInitrd } from '../coreos/pxe.ts'
import {
  ArtifactNotFound, ImageNotReady, NmstateUnavailable, NoAddrsize, NoInitrd, ShortLinkNotFound, ShortLinkStoreUnavailable, TokenNamesNoImage,
  TypeNotAvailable, UnknownFilename, VersionNotFound, VersionRequired, VersionUnknown
} from '../errors.ts'
import type { ImageStore } from '../store/image-store.ts'
import type { PreparedImage } from '../store/store-types.ts'
import type { OsImageEntry } from '../store/os-image-entry.ts'
import { needsNmstate } from '../store/os-image-entry.ts'
import type { Credential, InfraEnvSource } from '../upstream/infra-env-source.ts'
import type { LinkTarget } from '../links/short-links.ts'
import { BoundedCache } from '../io/bounded-cache.ts'
import { pickCredential } from './credentials.ts'
import type { AdmittedToken } from './tokens.ts'

const CUSTOMIZED_PER_TEMPLATE = 256

/**
 * Recently customized images by content, so the Range requests of one host
 * (a BMC sends thousands) reuse one image instead of re-compressing the
 * Ignition archive each time.
 */
class CustomizedImages {
  readonly #byTemplate = new WeakMap<IsoTemplate, BoundedCache<string, ComposedImage>>()
  // Cached upstream answers come back as the same Buffer objects: hash each one once.
  readonly #digests = new WeakMap<Buffer, string>()

  get (template: IsoTemplate, content: HostContent): ComposedImage {
    const ramdisk = content.ramdisk !== undefined ? this.#digest(content.ramdisk) : ''
    const key = `${this.#digest(content.ignition)}:${ramdisk}:${(content.kargs ?? []).join('\0')}`
    let images = this.#byTemplate.get(template)
    if (images === undefined) { images = new BoundedCache({ maxEntries: CUSTOMIZED_PER_TEMPLATE }); this.#byTemplate.set(template, images) }
    const cached = images.get(key)
    if (cached !== undefined) return cached
    const image = customize(template, content)
    images.set(key, image)
    return image
  }

  #digest (data: Buffer): string {
    let value = this.#digests.get(data)
    if (value === undefined) {
      value = createHash('sha256').update(data).digest('base64url')
      this.#digests.set(data, value)
    }
    return value
  }
}

/** A Map, not an object: client input never reaches the prototype ("constructor", "__proto__"). */
const ISO_FILENAMES: ReadonlyMap<string, IsoKind> = new Map([
  ['full.iso', 'full-iso'],
  ['minimal.iso', 'minimal-iso'],
  ['disconnected.iso', 'disconnected-iso']
])

/** The file name each kind of ISO is served under (the inverse of ISO_FILENAMES). */
const ISO_FILENAME_OF: ReadonlyMap<IsoKind, string> = new Map([...ISO_FILENAMES].map(([name, kind]) => [kind, name]))

export interface Served {
  image: ComposedImage
  lastModified: Date
  filename: string
  cacheControl?: string
  /** The image's short URL, for a `Link` header (ISOs, when the link store could be written). */
  link?: string
}

export interface ImageRequestsDeps {
  store: ImageStore
  source: InfraEnvSource
  /** Admits a credential or throws TOKEN_REFUSED (counted and logged by the caller's wrapper). */
  admit: (credential: Credential | undefined) => AdmittedToken
  /** The target of a short-link code; throws when the link store cannot be read. */
  resolveLink: (code: string) => Promise<LinkTarget | undefined>
  /** The short-link code of a target, or undefined when the link store cannot be written. */
  mintLink: (target: LinkTarget, expires: number) => Promise<string | undefined>
  /** IMAGE_SERVICE_BASE_URL, for short links. */
  baseUrl: string
  linkTtlMs: number
}

/** Where a request's credential may be: by the precedence of api.md, the first present is forwarded. */
export interface CredentialSources {
  /** The /byapikey/ or /bytoken/ path segment. */
  path?: { apiKey?: string, token?: string }
  query: Record<string, unknown>
  authorization?: string | undefined
}

/** An ISO request as its route parsed it. */
export interface IsoRequest extends CredentialSources {
  route: LinkTarget['route']
  /** The image id from the path; absent on token routes, where the token's claim names it. */
  imageId?: string
  version: string
  arch: string
  /** The ISO kind: from the `type` query, or from the file name of the short routes. */
  type?: IsoKind
  filename?: string
  signal?: AbortSignal
}

interface HostParams extends CredentialSources { imageId: string, signal?: AbortSignal }

function credentialOf (sources: CredentialSources): Credential | undefined {
  const { path = {}, query, authorization } = sources
  return pickCredential({
    ...(path.apiKey !== undefined ? { pathApiKey: path.apiKey } : {}),
    ...(path.token !== undefined ? { pathToken: path.token } : {}),
    query,
    ...(typeof authorization === 'string' ? { authorization } : {})
  })
}

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
  if (!needsNmstate(entry) || prepared.nmstateArchive !== undefined) return
  throw new NmstateUnavailable(prepared.key, entry.openshiftVersion, prepared.nmstateError ?? 'it could not be extracted')
}

/** Finds the entry an ISO request names, and refuses impossible types before any upstream call. */
function resolveIsoEntry (store: ImageStore, version: string, arch: string, type: IsoKind): OsImageEntry {
  const wanted = type === 'disconnected-iso' ? 'disconnected-iso' : 'full-iso'
  const entry = store.find(version, arch, wanted)
  if (entry === undefined) {
    if (store.find(version, arch) !== undefined) throw new TypeNotAvailable(`no ${type} is configured for version ${version} (${arch})`)
    throw new VersionNotFound(version, arch)
  }
  if (type === 'minimal-iso' && arch === 's390x') throw new TypeNotAvailable('there is no minimal ISO for s390x')
  return entry
}

function pxeEntry (store: ImageStore, version: string | undefined, arch: string): OsImageEntry {
  if (version === undefined || version === '') throw new VersionRequired()
  const entry = store.find(version, arch, 'full-iso')
  if (entry === undefined) throw new VersionUnknown(version, arch)
  return entry
}

export const ARTIFACTS = ['rootfs', 'kernel', 'ins-file'] as const

/** How long a link outlives its credential's expiry, answering 401. */
const EXPIRED_LINK_KEPT_MS = 24 * 3600_000

/**
 * What every image route serves, from what the request carried: the
 * prepared OS images, the host's content from assisted-service, and short
 * links. Credentials are picked and admitted here, before any upstream call.
 * It owns the cache of recently customized images, so its lifetime is the
 * app's.
 */

export class ImageRequests {
  readonly #deps: ImageRequestsDeps
  readonly #customized = new CustomizedImages()

  constructor (deps: ImageRequestsDeps) {
    this.#deps = deps
  }

  /**
   * The host's ISO. On the token routes the image id is the token's claim
   * (none: 404); a refused token is a 401 before anything is asked upstream.
   */
  async iso (request: IsoRequest): Promise<Served> {
    const type = request.type ?? ISO_FILENAMES.get(request.filename ?? '')
    if (type === undefined) throw new UnknownFilename(request.filename ?? '')
    const credential = credentialOf(request)
    const admitted = this.#deps.admit(credential)
    const imageId = request.imageId ?? admitted.imageId
    if (imageId === undefined) throw new TokenNamesNoImage()
    const { route, version, arch } = request
    const target: LinkTarget = { route, imageId, version, arch, type, ...(credential !== undefined ? { credential } : {}) }
    return await this.#isoOf(target, admitted.expiresAt, request.signal)
  }

  /** What a short link stands for, served as its long URL would be (a link whose token expired: 401). */
  async shortLink (request: { code: string, filename: string, signal?: AbortSignal }): Promise<Served> {
    let target: LinkTarget | undefined
    try {
      target = await this.#deps.resolveLink(request.code)
    } catch {
      throw new ShortLinkStoreUnavailable()
    }
    if (target === undefined || ISO_FILENAMES.get(request.filename) !== target.type) throw new ShortLinkNotFound()
    const { expiresAt } = this.#deps.admit(target.credential)
    return await this.#isoOf(target, expiresAt, request.signal)
  }

  /**
   * Template + Ignition + ramdisk for minimal + kernel arguments, and the
   * short link. The link is kept for the link TTL, or, when its credential
   * expires, until a while after: it then answers 401 as its long URL does.
   */
  async #isoOf (target: LinkTarget, credentialExpiresAt: number | undefined, signal: AbortSignal | undefined): Promise<Served> {
    const { store, source } = this.#deps
    const { imageId, version, arch, type, credential } = target
    const entry = resolveIsoEntry(store, version, arch, type)
    const prepared = ready(store, entry)
    const template = prepared.templates[type]
    if (template === undefined) throw new TypeNotAvailable(`no ${type} for version ${version} (${arch})`)
    const [ignition, ramdisk, kargs] = await Promise.all([
      source.ignition(imageId, type, credential, signal),
      type === 'minimal-iso' ? source.ramdisk(imageId, credential, signal) : Promise.resolve(undefined),
      source.kernelArguments(imageId, credential, signal)
    ])
    if (ramdisk !== undefined) requireNmstate(entry, prepared)
    const image = this.#customized.get(template, { ignition: ignition.data, ...(ramdisk !== undefined ? { ramdisk } : {}), kargs })
    const expires = credentialExpiresAt !== undefined ? credentialExpiresAt + EXPIRED_LINK_KEPT_MS : Date.now() + this.#deps.linkTtlMs
    const code = await this.#deps.mintLink(target, expires)
    return {
      image,
      lastModified: ignition.lastModified ?? prepared.lastModified,
      filename: type === 'disconnected-iso' ? `agent-ove.${arch}.iso` : `${imageId}-discovery.iso`,
      ...(code !== undefined ? { link: `${this.#deps.baseUrl}/s/${code}/${ISO_FILENAME_OF.get(type)!}` } : {})
    }
  }

  /** initrd.img + Ignition + ramdisk (+ nmstate with a ramdisk on 4.18+ entries), for PXE. */
  async pxeInitrd (params: HostParams & { version?: string, arch: string }): Promise<Served> {
    const { store, source } = this.#deps
    const credential = credentialOf(params)
    this.#deps.admit(credential)
    const entry = pxeEntry(store, params.version, params.arch)
    const prepared = ready(store, entry)
    if (prepared.initrd === undefined) throw new NoInitrd()
    const [ignition, ramdisk] = await Promise.all([
      source.ignition(params.imageId, undefined, credential, params.signal),
      source.ramdisk(params.imageId, credential, params.signal)
    ])
    if (ramdisk !== undefined) requireNmstate(entry, prepared)
    const image = pxeInitrd(prepared.initrd, {
      ignition: ignition.data,
      ...(ramdisk !== undefined ? { ramdisk } : {}),
      // nmstatectl applies the static network configuration the ramdisk carries: without one it is not needed.
      ...(ramdisk !== undefined && needsNmstate(entry) && prepared.nmstateArchive !== undefined ? { nmstate: prepared.nmstateArchive } : {})
    })
    return { image, lastModified: ignition.lastModified ?? prepared.lastModified, filename: `${params.imageId}-initrd.img` }
  }

  /** s390x initrd.addrsize: the ISO's load address and the size of the PXE initrd the same parameters give. */
  async addrsize (params: HostParams & { version?: string }): Promise<Served> {
    const initrd = await this.pxeInitrd({ ...params, arch: 's390x' })
    const prepared = ready(this.#deps.store, pxeEntry(this.#deps.store, params.version, 's390x'))
    if (prepared.artifacts.addrsizePrefix === undefined) throw new NoAddrsize()
    const data = initrdAddrsize(prepared.artifacts.addrsizePrefix, initrd.image.size)
    return {
      image: await ComposedImage.fromSegments([{ kind: 'buffer', data }]),
      lastModified: initrd.lastModified,
      filename: `${params.imageId}-initrd.addrsize`
    }
  }

  /** A raw file of the full ISO: rootfs, kernel or (s390x) generic.ins. */
  async bootArtifact (params: { artifact: string, version?: string, arch: string }): Promise<Served> {
    const { store } = this.#deps
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
}
