import createError from '@fastify/error'

/**
 * Every coded error the service raises, in one catalog, made the way Fastify
 * makes its own (@fastify/error: a code, a message format, `instanceof` per
 * code). Services throw these and know nothing of HTTP: plugins/app/errors.ts
 * maps each code to a status and the `{ code, message }` body.
 */
export class DomainError extends Error {
  declare readonly code: string
  /** UPSTREAM_STATUS: what assisted-service answered. */
  upstreamStatus?: number
}

/** A constructor for one code; its arguments fill the message's `%s`/`%d`. */
function coded<Args extends unknown[] = [string]> (code: string, message: string) {
  // Status 0 makes @fastify/error set none: statuses belong to the HTTP edge.
  return createError<Args>(code, message, 0, DomainError as unknown as ErrorConstructor)
}

// What a request asked for
export const VersionRequired = coded<[]>('IMG_VERSION_REQUIRED', 'the version query parameter is required')
export const UnknownFilename = coded('IMG_FILENAME', 'unknown image file %s')
export const TokenNamesNoImage = coded<[]>('IMG_BAD_TOKEN', 'the token names no image')
export const InvalidImageId = coded<[]>('IMG_BAD_ID', 'invalid image id')
/** An ISO path names a version and architecture we do not have. */
export const VersionNotFound = coded<[string, string]>('IMG_VERSION_NOT_FOUND', 'no OS image for version %s and architecture %s')
/** A query (PXE, addrsize, boot artifacts) names one: api.md answers these with 400, not 404. */
export const VersionUnknown = coded<[string, string]>('IMG_VERSION_UNKNOWN', 'no OS image for version %s and architecture %s')
export const TypeNotAvailable = coded('IMG_TYPE_NOT_AVAILABLE', '%s')
export const ArtifactNotFound = coded('IMG_ARTIFACT_NOT_FOUND', '%s')
export const InfraEnvNotFound = coded<[]>('INFRA_ENV_NOT_FOUND', 'no such infra-env')
export const ShortLinkNotFound = coded<[]>('SHORT_LINK_NOT_FOUND', 'unknown or expired link')
/** A token refused before any upstream call (services/images/tokens.ts says why). */
export const TokenRefused = coded('TOKEN_REFUSED', '%s')

// Not now: try again later
export const ImageNotReady = coded<[string, string]>('IMG_NOT_READY', 'OS image %s (%s) is not ready yet')
export const QueueTimeout = coded<[]>('QUEUE_TIMEOUT', 'too many concurrent requests, try again later')
export const ShortLinkStoreUnavailable = coded<[]>('SHORT_LINK_STORE_UNAVAILABLE', 'the short-link store cannot be reached; try again, or use the long URL')

// Nobody left to answer
export const ClientGone = coded<[]>('CLIENT_GONE', 'the client disconnected before the response')

// What the host's content or the OS image cannot do
export const KargsUnsupported = coded('IMG_KARGS_UNSUPPORTED', '%s')
export const EmbedAreaTooSmall = coded('IMG_EMBED_AREA_TOO_SMALL', '%s')
export const EmbedAreaInvalid = coded('IMG_EMBED_AREA_INVALID', '%s')
export const NoIgnitionArea = coded<[]>('IMG_NO_IGNITION_AREA', 'the ISO has no Ignition embed area')
export const NoRamdiskArea = coded('IMG_NO_RAMDISK_AREA', 'the %s template has no ramdisk embed area')
export const NoInitrd = coded<[]>('IMG_NO_INITRD', 'the OS image has no images/pxeboot/initrd.img')
export const NoAddrsize = coded<[]>('IMG_NO_ADDRSIZE', 'the s390x ISO has no images/initrd.addrsize')
export const NmstateUnavailable = coded<[string, string, string]>('IMG_NMSTATE_UNAVAILABLE', 'OS image %s has no nmstatectl, which static networking on OpenShift %s needs: %s')

// assisted-service
export const UpstreamStatus = coded<[number, string]>('UPSTREAM_STATUS', 'assisted-service answered %d to the %s request')
export const UpstreamTimeout = coded<[]>('UPSTREAM_TIMEOUT', 'assisted-service did not answer in time')
export const UpstreamUnreachable = coded<[]>('UPSTREAM_UNREACHABLE', 'cannot reach assisted-service')
export const UpstreamTooLarge = coded<[number, string]>('UPSTREAM_TOO_LARGE', 'assisted-service answered more than %d bytes for %s')
export const UpstreamBadAnswer = coded('UPSTREAM_BAD_ANSWER', '%s')
export const UpstreamBadKargs = coded('UPSTREAM_BAD_KARGS', 'invalid kernel_arguments from assisted-service: %s')

/** assisted-service's answer `status` to `call`, kept for the edge (it passes 4xx and 5xx through). */
export function upstreamStatus (status: number, call: string): DomainError {
  return Object.assign(new UpstreamStatus(status, call), { upstreamStatus: status })
}

// Formats we read and write
export const IsoFormatError = coded('ISO_FORMAT', '%s')
export const CpioFormatError = coded('CPIO_FORMAT', '%s')
export const FilesystemError = coded('ROOTFS_FORMAT', '%s')
export const CompressionError = coded('COMPRESSION', '%s')
export const PatchOverlap = coded('IMG_PATCH_OVERLAP', '%s')
export const MinimalTemplateError = coded('IMG_MINIMAL_TEMPLATE', '%s')
export const InvalidIso = coded('IMG_INVALID_ISO', '%s')

// OS images read from their origin on demand
/** Bytes a request needs are not cached and the origin did not send them in time. */
export const OriginUnavailable = coded('IMG_ORIGIN_UNAVAILABLE', 'the OS image origin cannot send the bytes needed now: %s')
/** The origin's file is not the one the cache holds blocks of (its validator or size changed). */
export const OriginChanged = coded('IMG_ORIGIN_CHANGED', 'the OS image changed at its origin: %s')

/** A download that failed; `retriable` and what a resume needs travel with it. */
export class DownloadError extends DomainError {
  override readonly code = 'IMG_DOWNLOAD_FAILED'
  readonly retriable: boolean
  validator?: string
  total?: number
  constructor (message: string, retriable: boolean) {
    super(message)
    this.name = 'DownloadError'
    this.retriable = retriable
  }
}
