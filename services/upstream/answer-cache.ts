import { createHash } from 'node:crypto'
import { BoundedCache } from '../io/bounded-cache.ts'

interface Entry<T> { value: T, size: number, expires: number }
interface Pending<T> { promise: Promise<T>, controller: AbortController, waiters: number }

/**
 * Caches upstream answers for a short TTL, coalesces identical concurrent
 * calls into one, and holds at most `maxBytes` (oldest evicted first).
 * Failures are never cached. The shared call is aborted only when every
 * caller waiting for it has gone.
 */
export class AnswerCache<T> {
  readonly ttlMs: number
  readonly maxBytes: number
  readonly #entries: BoundedCache<string, Entry<T>>
  readonly #pending = new Map<string, Pending<T>>()

  constructor (ttlMs: number, maxBytes: number) {
    this.ttlMs = ttlMs
    this.maxBytes = maxBytes
    this.#entries = new BoundedCache({ maxBytes, sizeOf: entry => entry.size })
  }

  /** Keys hold no secret in clear: the credential part is hashed. */
  static key (...parts: Array<string | undefined>): string {
    return createHash('sha256').update(parts.map(p => p ?? '').join('\0')).digest('base64url')
  }

  get bytes (): number { return this.#entries.bytes }

  async get (key: string, load: (signal: AbortSignal) => Promise<T>, sizeOf: (value: T) => number, signal?: AbortSignal): Promise<{ value: T, hit: boolean }> {
    const cached = this.#entries.peek(key)
    if (cached !== undefined && cached.expires > Date.now()) {
      return { value: cached.value, hit: true }
    }
    if (cached !== undefined) this.#entries.delete(key)
    let pending = this.#pending.get(key)
    const shared = pending !== undefined
    if (pending === undefined) {
      const controller = new AbortController()
      const entry: Pending<T> = { promise: Promise.resolve(undefined as T), controller, waiters: 0 }
      const settle = () => { if (this.#pending.get(key) === entry) this.#pending.delete(key) }
      entry.promise = load(controller.signal).then(value => {
        const current = this.#pending.get(key) === entry
        settle()
        if (current) this.#store(key, value, sizeOf(value))
        return value
      }, (err: unknown) => {
        settle()
        throw err
      })
      // Callers that leave early must not turn the shared failure into an unhandled rejection.
      entry.promise.catch(() => {})
      pending = entry
      this.#pending.set(key, pending)
    }
    const current = pending
    current.waiters++
    try {
      return { value: await withSignal(current.promise, signal), hit: shared }
    } finally {
      current.waiters--
      if (current.waiters === 0 && this.#pending.get(key) === current) {
        current.controller.abort(new Error('every caller left'))
        this.#pending.delete(key)
      }
    }
  }

  #store (key: string, value: T, size: number): void {
    if (this.ttlMs <= 0 || size > this.maxBytes) return
    this.#entries.set(key, { value, size, expires: Date.now() + this.ttlMs })
  }
}

function withSignal<T> (promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (signal === undefined) return promise
  if (signal.aborted) return Promise.reject(signal.reason as Error)
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(value => { signal.removeEventListener('abort', onAbort); resolve(value) },
      (err: unknown) => { signal.removeEventListener('abort', onAbort); reject(err as Error) })
  })
}
