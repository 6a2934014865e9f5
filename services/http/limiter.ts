import { QueueTimeout } from '../errors.ts'

export type Release = () => void

interface Waiter {
  grant: (release: Release) => void
  fail: (err: Error) => void
}

/**
 * Bounds in-flight work to `max` slots. Extra callers wait in FIFO order for
 * at most `queueTimeoutMs` (0: no limit), then fail with 503. A waiter whose signal aborts
 * (client gone) leaves the queue at once.
 */
export class ConcurrencyLimiter {
  readonly max: number
  readonly queueTimeoutMs: number
  #active = 0
  readonly #queue: Waiter[] = []

  constructor (max: number, queueTimeoutMs: number) {
    this.max = max
    this.queueTimeoutMs = queueTimeoutMs
  }

  get active (): number { return this.#active }
  get queued (): number { return this.#queue.length }

  acquire (signal?: AbortSignal): Promise<Release> {
    if (signal?.aborted === true) return Promise.reject(signal.reason as Error)
    if (this.#active < this.max) {
      this.#active++
      return Promise.resolve(this.#releaser())
    }
    return new Promise<Release>((resolve, reject) => {
      const cleanup = (): void => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        const index = this.#queue.indexOf(waiter)
        if (index !== -1) this.#queue.splice(index, 1)
      }
      const waiter: Waiter = {
        grant: release => { cleanup(); resolve(release) },
        fail: err => { cleanup(); reject(err) }
      }
      const onAbort = (): void => waiter.fail(signal!.reason as Error)
      const timer = this.queueTimeoutMs <= 0
        ? undefined
        : setTimeout(() => {
          waiter.fail(new QueueTimeout())
        }, this.queueTimeoutMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#queue.push(waiter)
    })
  }

  #releaser (): Release {
    let released = false
    return () => {
      if (released) return
      released = true
      const next = this.#queue[0]
      if (next !== undefined) {
        // The slot passes straight to the next waiter: #active stays the same.
        next.grant(this.#releaser())
      } else {
        this.#active--
      }
    }
  }
}
