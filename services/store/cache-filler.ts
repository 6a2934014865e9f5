import type { CacheBudget } from '../origin/cache-budget.ts'
import { sleep } from '../io/backoff.ts'
import type { PreparedImage, StoreLog } from './store-types.ts'

export interface CacheFillerOptions {
  /** Images filled at once (OS_IMAGES_PARALLEL_DOWNLOADS). */
  parallel: number
  budget: CacheBudget
  log: StoreLog
  signal: AbortSignal
  /** How long an image whose fill failed waits before it is tried again. */
  retryMs: number
  /** The images ready now. */
  images: () => PreparedImage[]
  /** Whether every image has been tried once: filling starts after readiness, never competing with preparation. */
  settled: () => boolean
  /** Called once an image's every block is cached. */
  complete: (image: PreparedImage) => Promise<void>
}

/**
 * OS_IMAGES_FETCH=lazy: once images are ready, their block caches are filled
 * behind the requests, `parallel` images at a time, the most recently served
 * first, and only while the whole image fits in the cache budget (a fill
 * never evicts what hosts read).
 */
export class CacheFiller {
  readonly #options: CacheFillerOptions
  readonly #filling = new Set<string>()
  /** When an image whose fill failed, or did not fit, may be tried again. */
  readonly #notBefore = new Map<string, number>()
  #wake: (() => void) | undefined

  constructor (options: CacheFillerOptions) {
    this.#options = options
  }

  /** Something changed (an image became ready, a fill ended): look again. */
  wake (): void {
    const wake = this.#wake
    this.#wake = undefined
    wake?.()
  }

  /** Fills until the store closes. */
  async run (): Promise<void> {
    const { signal } = this.#options
    const running = new Set<Promise<void>>()
    while (!signal.aborted) {
      const next = running.size < this.#options.parallel ? this.#next() : undefined
      if (next !== undefined) {
        this.#filling.add(next.key)
        const fill = this.#fill(next).finally(() => { this.#filling.delete(next.key); running.delete(fill); this.wake() })
        running.add(fill)
        continue
      }
      const woken = new Promise<void>(resolve => { this.#wake = resolve })
      await Promise.race([woken, sleep(this.#options.retryMs, signal).catch(() => {})])
    }
    await Promise.allSettled(running)
  }

  #next (): PreparedImage | undefined {
    if (!this.#options.settled()) return undefined
    const now = Date.now()
    const candidates = this.#options.images().filter(image => image.blocks !== undefined && !image.blocks.complete &&
      image.blocks.changed === undefined && !this.#filling.has(image.key) && (this.#notBefore.get(image.key) ?? 0) <= now)
    candidates.sort((a, b) => b.blocks!.lastServed - a.blocks!.lastServed)
    return candidates[0]
  }

  async #fill (image: PreparedImage): Promise<void> {
    const blocks = image.blocks!
    const { budget, log, signal } = this.#options
    if (!budget.fits(blocks.size - blocks.cachedBytes)) {
      this.#notBefore.set(image.key, Date.now() + 60_000)
      return
    }
    try {
      const started = Date.now()
      const complete = await blocks.fill(signal, () => budget.fits(blocks.blockSize))
      if (!complete) { this.#notBefore.set(image.key, Date.now() + this.#options.retryMs); return }
      log.info({ image: image.key, seconds: Math.round((Date.now() - started) / 100) / 10 }, 'OS image filled from its origin')
      await this.#options.complete(image)
    } catch (err) {
      if (signal.aborted) return
      this.#notBefore.set(image.key, Date.now() + this.#options.retryMs)
      log.warn({ image: image.key, error: (err as Error).message, retryInMs: this.#options.retryMs }, 'filling the OS image from its origin failed; it is tried again')
    }
  }
}
