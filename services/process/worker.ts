import type { Registry } from 'prom-client'
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
  process.on('message', (message: unknown) => {
    if (!isMessage(message)) return
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
    }
  }
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
