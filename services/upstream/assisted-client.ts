import type http from 'node:http'
import type https from 'node:https'
import got, { RequestError, TimeoutError } from 'got'
import type { IsoKind } from '../coreos/customize.ts'
import { InvalidImageId, upstreamStatus, UpstreamBadAnswer, UpstreamTimeout, UpstreamTooLarge, UpstreamUnreachable } from '../errors.ts'
import { isImageId } from '../images/credentials.ts'
import { outboundAgents, type OutboundOptions } from '../http/agents.ts'
import { parseKernelArguments, type Credential, type IgnitionAnswer, type InfraEnvSource } from './infra-env-source.ts'

export type Endpoint = 'ignition' | 'ramdisk' | 'infra-env'

export interface AssistedClientOptions extends Omit<OutboundOptions, 'insecureSkipVerify'> {
  scheme: 'http' | 'https'
  host: string
  timeoutMs?: number
  /** Largest Ignition or ramdisk body read (default 8 MiB); the infra-env document gets 1 MiB. */
  maxBodyBytes?: number
  /** Called after every upstream call with the endpoint, the status (or 'error') and how long it took. */
  onCall?: (endpoint: Endpoint, status: string, seconds: number) => void
}

const API = '/api/assisted-install/v2/infra-envs'

/** The three assisted-service calls, forwarding exactly one credential and nothing else. */
export class AssistedClient implements InfraEnvSource {
  readonly #base: string
  readonly #agents: { http: http.Agent, https: https.Agent }
  readonly #timeoutMs: number
  readonly #maxBodyBytes: number
  readonly #onCall: AssistedClientOptions['onCall']

  constructor (options: AssistedClientOptions) {
    this.#base = `${options.scheme}://${options.host}`
    this.#agents = outboundAgents(options)
    this.#timeoutMs = options.timeoutMs ?? 60_000
    this.#maxBodyBytes = options.maxBodyBytes ?? 8 << 20
    this.#onCall = options.onCall
  }

  async close (): Promise<void> {
    this.#agents.http.destroy()
    this.#agents.https.destroy()
  }

  async #get (endpoint: Endpoint, imageId: string, suffix: string, query: Record<string, string>, credential: Credential | undefined, signal?: AbortSignal) {
    // The id becomes a path segment: nothing but a valid id may reach it (no dot segments, no separators).
    if (!isImageId(imageId)) throw new InvalidImageId()
    const url = new URL(`${this.#base}${API}/${encodeURIComponent(imageId)}${suffix}`)
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v)
    const headers: Record<string, string> = {}
    if (credential?.kind === 'api_key') url.searchParams.set('api_key', credential.value)
    if (credential?.kind === 'image_token') headers['Image-Token'] = credential.value
    if (credential?.kind === 'authorization') headers.Authorization = credential.value
    const limit = endpoint === 'infra-env' ? 1 << 20 : this.#maxBodyBytes
    let tooLarge = false
    const startedAt = performance.now()
    const took = (): number => (performance.now() - startedAt) / 1000
    try {
      const request = got(url, {
        headers,
        agent: this.#agents,
        responseType: 'buffer',
        throwHttpErrors: false,
        followRedirect: false,
        // A GET may be retried once when the connection was reset; nothing else is retried.
        retry: { limit: 1, methods: ['GET'], statusCodes: [], errorCodes: ['ECONNRESET'], calculateDelay: ({ computedValue }) => computedValue === 0 ? 0 : 50 },
        timeout: { connect: Math.min(10_000, this.#timeoutMs), request: this.#timeoutMs },
        ...(signal !== undefined ? { signal } : {})
      })
      // Bounded memory whatever upstream sends: stop reading past the limit (declared or counted).
      const stop = (): void => { tooLarge = true; request.cancel() }
      void request.on('downloadProgress', ({ transferred, total }: { transferred: number, total?: number }) => {
        if (transferred > limit || (total ?? 0) > limit) stop()
      })
      const response = await request
      this.#onCall?.(endpoint, String(response.statusCode), took())
      return response
    } catch (err) {
      this.#onCall?.(endpoint, tooLarge ? 'too-large' : 'error', took())
      if (tooLarge) throw new UpstreamTooLarge(limit, endpoint)
      if (signal?.aborted === true) throw err
      if (err instanceof TimeoutError) throw new UpstreamTimeout()
      if (err instanceof RequestError) throw new UpstreamUnreachable()
      throw err
    }
  }

  async ignition (imageId: string, isoType: IsoKind | undefined, credential: Credential | undefined, signal?: AbortSignal): Promise<IgnitionAnswer> {
    const query: Record<string, string> = { file_name: 'discovery.ign' }
    if (isoType !== undefined) query.discovery_iso_type = isoType
    const response = await this.#get('ignition', imageId, '/downloads/files', query, credential, signal)
    if (response.statusCode !== 200) throw upstreamStatus(response.statusCode, 'ignition')
    const lastModified = response.headers['last-modified'] !== undefined ? new Date(response.headers['last-modified']) : undefined
    return { data: response.body, ...(lastModified !== undefined && !Number.isNaN(lastModified.getTime()) ? { lastModified } : {}) }
  }

  async ramdisk (imageId: string, credential: Credential | undefined, signal?: AbortSignal): Promise<Buffer | undefined> {
    const response = await this.#get('ramdisk', imageId, '/downloads/minimal-initrd', {}, credential, signal)
    if (response.statusCode === 204) return undefined
    if (response.statusCode < 200 || response.statusCode > 299) throw upstreamStatus(response.statusCode, 'minimal-initrd')
    return response.body
  }

  async kernelArguments (imageId: string, credential: Credential | undefined, signal?: AbortSignal): Promise<string[]> {
    const response = await this.#get('infra-env', imageId, '', {}, credential, signal)
    if (response.statusCode !== 200) throw upstreamStatus(response.statusCode, 'infra-env')
    let infraEnv: { kernel_arguments?: unknown }
    try {
      infraEnv = JSON.parse(response.body.toString('utf8')) as typeof infraEnv
    } catch {
      throw new UpstreamBadAnswer('assisted-service sent an infra-env that is not JSON')
    }
    return parseKernelArguments(infraEnv.kernel_arguments)
  }
}
