import type { MetricObjectWithValues, MetricValue } from 'prom-client'

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

export function isMessage (value: unknown): value is ClusterMessage {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string' && (value as { type: string }).type.startsWith('ais:')
}
