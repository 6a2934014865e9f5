import { FilePool } from '../compose/file-pool.ts'
import type { MemoryMapper } from '../compose/memory-map.ts'
import { findBootArtifacts } from '../coreos/pxe.ts'
import { decDateTime } from '../iso9660/dates.ts'
import type { ImageSource } from './image-source.ts'
import type { PreparedImage, StoreConfig, StoreLog } from './store-types.ts'
import { needsNmstate, type OsImageEntry } from './os-image-entry.ts'
import { artifactImages, isoTemplates } from './templates.ts'

export interface PreparerOptions {
  config: Pick<StoreConfig, 'imageServiceBaseUrl'>
  log: StoreLog
  /** Where the ISO's bytes and nmstatectl come from: this process's role, decided once. */
  source: ImageSource
  /** Maps the ISOs that responses stream from; unset: they are read. */
  mapper?: MemoryMapper | undefined
}

/**
 * Turns a configured OS image into what the routes serve, one step after the
 * other: the ISO (`image-source.ts`: a whole file, or a block cache read from
 * its origin), nmstatectl (`nmstate-cache.ts`), templates and boot artifacts
 * (`templates.ts`). No state of its own: the image store decides when to
 * prepare and what to do on failure.
 */
export class ImagePreparer {
  readonly #options: PreparerOptions

  constructor (options: PreparerOptions) {
    this.#options = options
  }

  /** Prepares one OS image; the caller retries on failure. */
  async prepare (group: OsImageEntry, key: string): Promise<PreparedImage> {
    const { source, log, mapper } = this.#options
    const opened = await source.openIso(group, key)
    const { iso, path } = opened
    const pool = new FilePool({
      ...(mapper !== undefined ? { mapper } : {}),
      onMapFailure: (file, err) => log.warn({ image: key, file, error: err.message }, 'cannot map the OS image; reading it instead')
    })
    try {
      if (opened.gate !== undefined) pool.gate(path, opened.gate)
      // The file the layout was read from, not whatever lies at the path by the time a request comes.
      await pool.openExpected(path, iso.identity)
      // Content, not location, names the ISO: every replica then gives the same ETags.
      pool.identify(path, opened.contentId)
      const artifacts = await findBootArtifacts(iso)
      const { nmstateArchive, nmstateError } = needsNmstate(group) ? await source.nmstate(group, key, artifacts) : {}
      const templates = await isoTemplates(iso, group, pool, { imageServiceBaseUrl: this.#options.config.imageServiceBaseUrl, nmstate: nmstateArchive })
      return {
        entry: group,
        key,
        isoPath: path,
        iso,
        templates,
        artifacts,
        ...await artifactImages(artifacts, pool),
        ...(nmstateArchive !== undefined ? { nmstateArchive } : {}),
        ...(nmstateError !== undefined ? { nmstateError } : {}),
        // The ISO's own creation date, the same in every copy; the file's mtime only when it has none.
        lastModified: decDateTime(iso.primary.created) ?? new Date(Math.floor(iso.identity.mtimeMs / 1000) * 1000),
        pool,
        ...(opened.blocks !== undefined ? { blocks: opened.blocks } : {})
      }
    } catch (err) {
      await iso.close()
      await pool.close()
      await opened.blocks?.close()
      throw err
    }
  }
}
