import { readFileSync } from 'node:fs'
import os from 'node:os'
import type { MetricObjectWithValues, MetricValue, Registry } from 'prom-client'
import type { StoreFollower } from '../store/store-types.ts'

/**
 * The CPUs this process may use: the scheduler affinity, further capped by a
 * cgroup v2 CPU quota (a Kubernetes CPU limit), at least one.
 */
export function availableCpus (cpuMaxFile = '/sys/fs/cgroup/cpu.max'): number {
  let cpus = os.availableParallelism()
  try {
    const [quota, period] = readFileSync(cpuMaxFile, 'utf8').trim().split(/\s+/)
    if (quota !== undefined && quota !== 'max' && Number(period) > 0) cpus = Math.min(cpus, Math.ceil(Number(quota) / Number(period)))
  } catch { /* no cgroup v2 quota here */ }
  return Math.max(1, cpus)
}

/** Messages between the primary (which prepares the images) and the workers (which serve them). */
export type ClusterMessage =
  /** `nmstateErrors`: why a ready image has no nmstatectl, by key (a worker never extracts it itself). */
  | { type: 'ais:ready', keys: string[], nmstateErrors: Record<string, string>, refused: Record<string, string> }
  | { type: 'ais:prepared', key: string, ready: boolean }
  | { type: 'ais:serving', keys: string[] }
  | { type: 'ais:metrics-request', id: number }
  | { type: 'ais:metrics-response', id: number, text: string }
  /** The primary asks each worker for its registry's metrics, to aggregate them with its own. */
  | { type: 'ais:registry-request', id: number }
  | { type: 'ais:registry-response', id: number, metrics: MetricObjectWithValues<MetricValue<string>>[] }

function isMessage (value: unknown): value is ClusterMessage {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string' && (value as { type: string }).type.startsWith('ais:')
}

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

/**
 * The primary's book of which worker can serve which image: an image is
 * ready for /health only when every live worker has it prepared, so every
 * worker answers readiness alike.
 */
export class ServingBook {
  readonly #prepared = new Map<number, Set<string>>()

  worker (id: number): void { if (!this.#prepared.has(id)) this.#prepared.set(id, new Set()) }
  gone (id: number): void { this.#prepared.delete(id) }

  prepared (id: number, key: string, ready: boolean): void {
    const keys = this.#prepared.get(id) ?? new Set<string>()
    if (ready) keys.add(key)
    else keys.delete(key)
    this.#prepared.set(id, keys)
  }

  /** Keys every live worker can serve (none while there is no worker). */
  serving (keys: readonly string[]): string[] {
    const workers = [...this.#prepared.values()]
    if (workers.length === 0) return []
    return keys.filter(key => workers.every(prepared => prepared.has(key)))
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

export { isMessage }
