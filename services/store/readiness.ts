import type { ImageStore } from './image-store.ts'
import { needsNmstate } from './os-image-entry.ts'

/**
 * Which OS images can be served, read from one source when asked, never
 * copied: this process's image store, or, in a worker, the images every
 * worker of the cluster can serve (as the primary last said).
 */
export class Readiness {
  readonly #store: Pick<ImageStore, 'keys' | 'isReady' | 'get' | 'refusal'>
  #cluster: ReadonlySet<string> | undefined

  /** `followsCluster`: a worker, ready for what the whole cluster serves (nothing until the primary says). */
  constructor (store: Pick<ImageStore, 'keys' | 'isReady' | 'get' | 'refusal'>, followsCluster = false) {
    this.#store = store
    if (followsCluster) this.#cluster = new Set()
  }

  /** In a worker: the keys every worker can serve now. */
  clusterServes (keys: ReadonlySet<string>): void {
    this.#cluster = keys
  }

  isReady (key: string): boolean {
    return this.#cluster !== undefined ? this.#cluster.has(key) : this.#store.isReady(key)
  }

  /**
   * Every image serves, or is refused for good: an image that can never serve
   * must not keep the others out of rotation (it is listed in /health and counted).
   */
  allReady (): boolean {
    return this.#store.keys.every(key => this.isReady(key) || this.#store.refusal(key) !== undefined)
  }

  pending (): string[] {
    return this.#store.keys.filter(key => !this.isReady(key) && this.#store.refusal(key) === undefined)
  }

  refused (): Array<{ image: string, reason: string }> {
    return this.#store.keys.flatMap(key => {
      const reason = this.#store.refusal(key)
      return reason !== undefined ? [{ image: key, reason }] : []
    })
  }

  /**
   * Ready images that serve only part of what they should (no nmstatectl for
   * OpenShift >= 4.18): shown in /health's body, while the pod stays in rotation.
   */
  degraded (): Array<{ image: string, reason: string }> {
    const degraded: Array<{ image: string, reason: string }> = []
    for (const key of this.#store.keys) {
      const image = this.#store.get(key)
      if (image === undefined || !needsNmstate(image.entry) || image.nmstateArchive !== undefined) continue
      degraded.push({ image: key, reason: `no nmstatectl for static networking: ${image.nmstateError ?? 'not extracted'}` })
    }
    return degraded
  }
}
