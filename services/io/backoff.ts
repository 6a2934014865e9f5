export interface Backoff {
  baseMs: number
  maxMs: number
  /** The share of the delay left to chance: 0.5 waits between half and all of it. */
  jitter: number
}

/** How long to wait before retry `failures` (1 after the first failure): doubling from `baseMs`, capped, jittered downwards. */
export function backoffDelay (failures: number, { baseMs, maxMs, jitter }: Backoff): number {
  return Math.min(maxMs, baseMs * 2 ** (failures - 1)) * (1 - jitter + Math.random() * jitter)
}

/** Waits `ms`, or rejects when `signal` aborts; the abort listener never outlives the wait. */
export function sleep (ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => { clearTimeout(timer); reject(signal!.reason as Error) }
    const timer = setTimeout(() => { signal?.removeEventListener('abort', onAbort); resolve() }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
