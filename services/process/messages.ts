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
  /** A worker needs bytes of the primary's block cache of `key` (the file with `inode`) present. */
  | { type: 'ais:bytes-request', id: number, key: string, inode: number, offset: number, length: number, readAhead: number }
  /** `error`: why they cannot be had (`code` a DomainError's, so the worker answers as the primary would). */
  | { type: 'ais:bytes-response', id: number, error?: { code: string, message: string } }
  /** The primary is about to evict these blocks: each worker forgets them and names those it holds. */
  | { type: 'ais:evict-request', id: number, key: string, inode: number, blocks: number[] }
  | { type: 'ais:evict-response', id: number, held: number[] }
  /** A worker served from the primary's block cache of `key`. */
  | { type: 'ais:served', key: string }

export function isMessage (value: unknown): value is ClusterMessage {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string' && (value as { type: string }).type.startsWith('ais:')
}
