import type { ComposedImage } from '../compose/composed-image.ts'
import type { FilePool } from '../compose/file-pool.ts'
import type { IsoKind, IsoTemplate } from '../coreos/customize.ts'
import type { BootArtifacts } from '../coreos/pxe.ts'
import type { IsoImage } from '../iso9660/reader.ts'
import type { BlockCache } from '../origin/block-cache.ts'
import type { DownloadLog } from './download.ts'
import type { OsImageEntry } from './os-image-entry.ts'

/** What the image store is made of and works with: shared by the store, its preparer and its followers. */

export interface StoreConfig {
  dataDir: string
  dataTempDir: string
  osImages: OsImageEntry[]
  imageServiceBaseUrl: string
  osImagesRequestHeaders: Record<string, string>
  osImagesRequestQueryParams: Record<string, string>
  osImageDownloadCaFile?: string
  insecureSkipVerify: boolean
  proxy: { http?: string, https?: string, noProxy?: string }
  /** How images are had: read from the origin by blocks and filled behind (default), by blocks only, or whole first. */
  osImagesFetch?: 'lazy' | 'on-demand' | 'eager'
  /** Whole downloads and background fills at once (default 2). */
  osImagesParallelDownloads?: number
  /** Bytes every block cache may hold together; unset: no budget. */
  osImagesCacheMaxBytes?: number | undefined
  /** Seconds a read waits for absent bytes (default 30). */
  osImagesFetchTimeoutSeconds?: number
}

export interface StoreLog extends DownloadLog {
  error: (obj: object, msg: string) => void
}

export interface StoreMetrics {
  downloadedBytes: (n: number) => void
  downloadFailed: () => void
  readyChanged: (readyCount: number) => void
}

export interface StoreTiming {
  downloadAttempts: number
  downloadBackoffMs: number
  retryBaseMs: number
  retryMaxMs: number
  progressIntervalMs: number
  /** How often a ready image's file is checked for a replacement (a new file renamed over it). */
  identityCheckMs: number
  /**
   * How long a replaced image stays open for requests that took it before the
   * swap (they may still be waiting on assisted-service); its files close after
   * that and after the last response streaming from them.
   */
  retiredLingerMs: number
}

/** One OS image, downloaded, validated and prepared: what the routes serve from. */
export interface PreparedImage {
  entry: OsImageEntry
  key: string
  isoPath: string
  iso: IsoImage
  templates: Partial<Record<IsoKind, IsoTemplate>>
  artifacts: BootArtifacts
  initrd?: ComposedImage
  /** Boot artifacts as served by /boot-artifacts. */
  artifactImages: Partial<Record<'rootfs' | 'kernel' | 'ins-file', ComposedImage>>
  /** gzip cpio with usr/bin/nmstatectl, for openshift_version >= 4.18.0-ec.0. */
  nmstateArchive?: Buffer
  /** Why an entry that needs nmstatectl has none: requests with static networking fail with this. */
  nmstateError?: string
  lastModified: Date
  pool: FilePool
  /** The block cache this process fetches the ISO into, when it is read from its origin by blocks (the leader's only). */
  blocks?: BlockCache
}

/**
 * A store that prepares nothing itself: another process (the cluster's
 * primary) downloads and checks the images; this one opens each when told.
 */
export interface StoreFollower {
  /** Resolves once the leader has the image ready in DATA_DIR. */
  ready (key: string): Promise<void>
  /** Tells the leader whether this process can serve an image now. */
  reportPrepared (key: string, ready: boolean): void
  /** Why the leader has no nmstatectl for a ready image (this process never extracts it). */
  nmstateError (key: string): string | undefined
  /** Why the leader refused an image for good; `ready` resolves for such an image too. */
  refusal (key: string): string | undefined
  /** Calls `listener` with the images every process can serve, whenever that changes. */
  onServing (listener: (keys: ReadonlySet<string>) => void): void
  /** Has the leader fetch bytes of an image's block cache (the file with this inode) into it; resolves once they are there. */
  askForBytes (key: string, inode: number, offset: number, length: number, readAhead: number): Promise<void>
  /** Tells the leader that this process served from an image's block cache (its eviction order). */
  served (key: string): void
  /** `listener` is asked, when the leader is to evict blocks of that cache, which of them this process holds. */
  onEvicting (key: string, inode: number, listener: (blocks: number[]) => number[]): void
}
