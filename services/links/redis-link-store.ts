import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { LINK_ID, type LinkStore } from './link-store.ts'

/**
 * Valkey or Redis: the TTL lives in the server (SET … PX … NX), so nothing
 * needs pruning, and every replica sees every link. Calls fail fast when the
 * server is away (a one-second command timeout): the caller serves without a Link header.
 */
export class RedisLinkStore implements LinkStore {
  readonly #client: Redis
  readonly #prefix: string

  constructor (url: string, prefix = 'assisted-image-service:short-link:') {
    this.#client = new Redis(url, {
      lazyConnect: true,
      // Commands wait for a (re)connection at most this long, then fail: the caller degrades.
      commandTimeout: 1000,
      maxRetriesPerRequest: 1,
      connectTimeout: 2000,
      retryStrategy: attempt => Math.min(5000, 100 * 2 ** Math.min(attempt, 6))
    })
    // Errors surface on the calls; the client reconnects by itself.
    this.#client.on('error', () => {})
    this.#prefix = prefix
    this.#client.connect().catch(() => {})
  }

  async get (id: string): Promise<Buffer | undefined> {
    if (!LINK_ID.test(id)) return undefined
    return (await this.#client.getBuffer(`${this.#prefix}${id}`)) ?? undefined
  }

  async put (id: string, record: Buffer, expires: number): Promise<void> {
    if (!LINK_ID.test(id)) throw new RangeError('invalid link id')
    const ttl = Math.max(1, Math.round(expires - Date.now()))
    await this.#client.set(`${this.#prefix}${id}`, record, 'PX', ttl, 'NX')
  }

  async secret (): Promise<Buffer> {
    const key = `${this.#prefix}secret`
    await this.#client.set(key, randomBytes(32).toString('hex'), 'NX')
    const value = await this.#client.get(key)
    if (value === null || !/^[0-9a-f]{64}$/.test(value)) throw new Error('the short-link secret in Redis is not valid')
    return Buffer.from(value, 'hex')
  }

  async close (): Promise<void> {
    this.#client.disconnect()
  }
}
