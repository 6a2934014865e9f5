import type { IsoKind } from '../coreos/customize.ts'
import { AnswerCache } from './answer-cache.ts'
import type { Credential, IgnitionAnswer, InfraEnvSource } from './infra-env-source.ts'

type Answer = IgnitionAnswer | Buffer | undefined | string[]

/**
 * An InfraEnvSource whose answers are cached per (image id, credential, call,
 * ISO type): a BMC reading one ISO with a thousand Range requests costs a
 * handful of upstream calls.
 */
export class CachedInfraEnvSource implements InfraEnvSource {
  readonly #source: InfraEnvSource
  readonly #cache: AnswerCache<Answer>
  readonly #onHit: ((call: string) => void) | undefined

  constructor (source: InfraEnvSource, options: { ttlSeconds: number, maxBytes?: number, onHit?: (call: string) => void }) {
    this.#source = source
    this.#cache = new AnswerCache<Answer>(options.ttlSeconds * 1000, options.maxBytes ?? 256 << 20)
    this.#onHit = options.onHit
  }

  get cache (): AnswerCache<Answer> { return this.#cache }

  async #cached<T extends Answer> (call: string, imageId: string, credential: Credential | undefined, extra: string | undefined,
    load: (signal: AbortSignal) => Promise<T>, signal?: AbortSignal): Promise<T> {
    const key = AnswerCache.key(call, imageId, credential?.kind, credential?.value, extra)
    const { value, hit } = await this.#cache.get(key, load, sizeOf, signal)
    if (hit) this.#onHit?.(call)
    return value as T
  }

  ignition (imageId: string, isoType: IsoKind | undefined, credential: Credential | undefined, signal?: AbortSignal): Promise<IgnitionAnswer> {
    return this.#cached('ignition', imageId, credential, isoType, s => this.#source.ignition(imageId, isoType, credential, s), signal)
  }

  ramdisk (imageId: string, credential: Credential | undefined, signal?: AbortSignal): Promise<Buffer | undefined> {
    return this.#cached('ramdisk', imageId, credential, undefined, s => this.#source.ramdisk(imageId, credential, s), signal)
  }

  kernelArguments (imageId: string, credential: Credential | undefined, signal?: AbortSignal): Promise<string[]> {
    return this.#cached('infra-env', imageId, credential, undefined, s => this.#source.kernelArguments(imageId, credential, s), signal)
  }

  async close (): Promise<void> {
    await this.#source.close?.()
  }
}

function sizeOf (answer: Answer): number {
  if (answer === undefined) return 64
  if (Buffer.isBuffer(answer)) return answer.length + 64
  if (Array.isArray(answer)) return answer.reduce((n, s) => n + s.length + 16, 64)
  return answer.data.length + 64
}
