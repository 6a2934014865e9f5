import type { Registry } from 'prom-client'
import { OriginChanged, OriginUnavailable } from '../errors.ts'
import type { StoreFollower } from '../store/store-types.ts'
import { isMessage, type ClusterMessage } from './messages.ts'

/* The worker side of a cluster: what a serving process asks of, and answers to, the primary. */

/**
 * A worker's view of the primary's image store: an image may be opened once
 * the primary says it is downloaded and checked.
 */
export function followPrimary (): StoreFollower {
  const ready = new Set<string>()
  let nmstateErrors: Record<string, string> = {}
  let refused: Record<string, string> = {}
  const waiting = new Map<string, Array<() => void>>()
  const servingListeners: Array<(keys: ReadonlySet<string>) => void> = []
  let serving: ReadonlySet<string> | undefined
  const asking = new Map<number, { resolve: () => void, reject: (err: Error) => void }>()
  let nextAsk = 0
  const evictionListeners = new Map<string, (blocks: number[]) => number[]>()
  process.on('message', (message: unknown) => {
    if (!isMessage(message)) return
    if (message.type === 'ais:bytes-response') {
      const waiter = asking.get(message.id)
      asking.delete(message.id)
      if (message.error === undefined) waiter?.resolve()
      else waiter?.reject(primaryError(message.error))
      return
    }
    if (message.type === 'ais:evict-request') {
      const held = evictionListeners.get(`${message.key}\0${message.inode}`)?.(message.blocks) ?? []
      process.send?.({ type: 'ais:evict-response', id: message.id, held } satisfies ClusterMessage)
      return
    }
    if (message.type === 'ais:serving') {
      serving = new Set(message.keys)
      for (const listener of servingListeners) listener(serving)
    }
    if (message.type !== 'ais:ready') return
    nmstateErrors = message.nmstateErrors
    refused = message.refused
    for (const key of [...message.keys, ...Object.keys(refused)]) {
      ready.add(key)
      for (const wake of waiting.get(key) ?? []) wake()
      waiting.delete(key)
    }
  })
  return {
    ready (key: string): Promise<void> {
      if (ready.has(key)) return Promise.resolve()
      return new Promise(resolve => { waiting.set(key, [...(waiting.get(key) ?? []), resolve]) })
    },
    reportPrepared (key: string, isReady: boolean): void {
      process.send?.({ type: 'ais:prepared', key, ready: isReady } satisfies ClusterMessage)
    },
    nmstateError (key: string): string | undefined {
      return Object.hasOwn(nmstateErrors, key) ? nmstateErrors[key] : undefined
    },
    refusal (key: string): string | undefined {
      return Object.hasOwn(refused, key) ? refused[key] : undefined
    },
    onServing (listener: (keys: ReadonlySet<string>) => void): void {
      servingListeners.push(listener)
      // What the primary said before this listener came.
      if (serving !== undefined) listener(serving)
    },
    askForBytes (key: string, inode: number, offset: number, length: number, readAhead: number): Promise<void> {
      const id = ++nextAsk
      return new Promise((resolve, reject) => {
        asking.set(id, { resolve, reject })
        process.send?.({ type: 'ais:bytes-request', id, key, inode, offset, length, readAhead } satisfies ClusterMessage)
      })
    },
    served (key: string): void {
      process.send?.({ type: 'ais:served', key } satisfies ClusterMessage)
    },
    onEvicting (key: string, inode: number, listener: (blocks: number[]) => number[]): void {
      evictionListeners.set(`${key}\0${inode}`, listener)
    }
  }
}

/** The primary's failure to fetch bytes, as the error a route answers for (a 503 with Retry-After). */
function primaryError ({ code, message }: { code: string, message: string }): Error {
  const err = code === 'IMG_ORIGIN_CHANGED' ? new OriginChanged('') : new OriginUnavailable('')
  err.message = message
  return err
}

/** From a worker: the metrics of every process, as the primary aggregates them. */
export function primaryMetrics (timeoutMs = 5000): Promise<string> {
  const id = Math.floor(Math.random() * 2 ** 31)
  return new Promise((resolve, reject) => {
    const onMessage = (message: unknown): void => {
      if (!isMessage(message) || message.type !== 'ais:metrics-response' || message.id !== id) return
      clearTimeout(timer)
      process.off('message', onMessage)
      resolve(message.text)
    }
    const timer = setTimeout(() => { process.off('message', onMessage); reject(new Error('the primary did not send metrics in time')) }, timeoutMs)
    process.on('message', onMessage)
    process.send!({ type: 'ais:metrics-request', id } satisfies ClusterMessage)
  })
}

/** In a worker: answers the primary's requests for this process's metrics. */
export function answerRegistryRequests (registry: Registry): void {
  process.on('message', (message: unknown) => {
    if (!isMessage(message) || message.type !== 'ais:registry-request') return
    void registry.getMetricsAsJSON().then(
      metrics => process.send!({ type: 'ais:registry-response', id: message.id, metrics } satisfies ClusterMessage),
      () => process.send!({ type: 'ais:registry-response', id: message.id, metrics: [] } satisfies ClusterMessage))
  })
}
