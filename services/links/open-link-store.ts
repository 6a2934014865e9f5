import type { LinkStore } from './link-store.ts'
import { FileLinkStore } from './file-link-store.ts'

/**
 * The store for a configuration: Valkey/Redis when a URL is given (its client
 * is loaded only then), else the embedded one in `dir`.
 */
export async function openLinkStore (options: { redisUrl?: string | undefined, dir: string }): Promise<LinkStore> {
  if (options.redisUrl === undefined) return new FileLinkStore(options.dir)
  const { RedisLinkStore } = await import('./redis-link-store.ts')
  return new RedisLinkStore(options.redisUrl.replace(/^valkey/, 'redis'))
}
