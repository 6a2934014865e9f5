import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes } from 'node:crypto'
import type { IsoKind } from '../coreos/customize.ts'
import type { LinkStore } from './link-store.ts'
import type { Credential } from '../upstream/infra-env-source.ts'
import { BoundedCache } from '../io/bounded-cache.ts'

/** What a short link stands for: everything the long URL carried. */
export interface LinkTarget {
  /** The route family that minted it (`byid`, `bytoken`, ...): part of the link's identity, so each has its own code. */
  route: string
  imageId: string
  credential?: Credential
  version: string
  arch: string
  type: IsoKind
}

const CODE = /^[A-Za-z0-9_-]{22}$/
const SALT = Buffer.from('assisted-image-service short link v1')
const MAX_KNOWN = 10_000

/**
 * Short URLs for BMCs that reject long ones (iDRAC: 255 characters).
 *
 * - A code is derived from its target with a shared secret (HMAC), so every
 *   replica mints the same code for the same target: no second link, no
 *   coordination.
 * - A link holds its credential, so the store never sees it in clear: the
 *   record is sealed (AES-256-GCM) with a key derived from the code (HKDF),
 *   and filed under a hash of the code. A copied store file or a Redis dump
 *   opens nothing without the URL itself.
 */
export class ShortLinks {
  readonly #store: LinkStore
  #secret: Buffer | undefined
  readonly #now: () => number
  /** Links this process minted or opened: a BMC's thousands of Range requests cost no store round trip. */
  readonly #known = new BoundedCache<string, StoredLink>({ maxEntries: MAX_KNOWN })
  /** Codes of the targets minted lately, by target. */
  readonly #codes = new BoundedCache<string, string>({ maxEntries: MAX_KNOWN })

  /** Without a configured secret, the store's shared one is fetched on first use (and again after a failure). */
  constructor (store: LinkStore, secret?: Buffer, now: () => number = Date.now) {
    this.#store = store
    this.#secret = secret
    this.#now = now
  }

  /** The code for a target: the one every replica derives; stored until `expires` unless it already is. */
  async mint (target: LinkTarget, expires: number): Promise<string> {
    this.#secret ??= await this.#store.secret()
    const key = targetKey(target)
    // Every Range request of a BMC mints its link again: the HMAC was a sixth of such a request's CPU.
    let code = this.#codes.peek(key)
    if (code === undefined) {
      code = createHmac('sha256', this.#secret).update(key).digest('base64url').slice(0, 22)
      this.#codes.set(key, code)
    }
    if (await this.#open(code) !== undefined) return code
    const link = { target, expires }
    await this.#store.put(recordId(code), seal(code, link), expires)
    this.#known.set(code, link)
    return code
  }

  async resolve (code: string): Promise<LinkTarget | undefined> {
    if (!CODE.test(code)) return undefined
    return (await this.#open(code))?.target
  }

  async #open (code: string): Promise<StoredLink | undefined> {
    const known = this.#known.peek(code)
    if (known !== undefined && known.expires > this.#now()) return known
    this.#known.delete(code)
    const record = await this.#store.get(recordId(code))
    if (record === undefined) return undefined
    const link = unseal(code, record)
    if (link === undefined || link.expires <= this.#now()) return undefined
    this.#known.set(code, link)
    return link
  }

  async close (): Promise<void> {
    await this.#store.close()
  }
}

interface StoredLink { target: LinkTarget, expires: number }

function targetKey (target: LinkTarget): string {
  return [target.route, target.imageId, target.credential?.kind, target.credential?.value, target.version, target.arch, target.type].join('\0')
}

/** Where a link's record is filed: a hash of its code, which does not give the code back. */
function recordId (code: string): string {
  return createHash('sha256').update(`short-link\0${code}`).digest('hex')
}

function keyFor (code: string): Buffer {
  return Buffer.from(hkdfSync('sha256', code, SALT, 'aes-256-gcm key', 32))
}

/** iv (12) | tag (16) | ciphertext of the JSON record. */
function seal (code: string, link: StoredLink): Buffer {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', keyFor(code), iv)
  const body = Buffer.concat([cipher.update(JSON.stringify(link), 'utf8'), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), body])
}

function unseal (code: string, record: Buffer): StoredLink | undefined {
  if (record.length < 29) return undefined
  try {
    const decipher = createDecipheriv('aes-256-gcm', keyFor(code), record.subarray(0, 12))
    decipher.setAuthTag(record.subarray(12, 28))
    const text = Buffer.concat([decipher.update(record.subarray(28)), decipher.final()]).toString('utf8')
    const link = JSON.parse(text) as StoredLink
    return typeof link?.expires === 'number' && typeof link.target?.imageId === 'string' ? link : undefined
  } catch {
    return undefined
  }
}

/**
 * Links from the single JSON file of earlier versions (credentials in clear)
 * move into the store, sealed under their own codes so their URLs keep
 * working; the file is then deleted. Returns how many moved.
 */
export async function migrateLegacyLinks (file: string, store: LinkStore, now: () => number = Date.now): Promise<number> {
  const { readFile, unlink } = await import('node:fs/promises')
  let stored: unknown
  try {
    stored = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
    stored = []
  }
  let moved = 0
  for (const entry of Array.isArray(stored) ? stored as Array<LinkTarget & { code?: unknown, expires?: unknown }> : []) {
    const { code, expires, ...target } = entry
    if (typeof code !== 'string' || !CODE.test(code) || typeof expires !== 'number' || expires <= now()) continue
    await store.put(recordId(code), seal(code, { target, expires }), expires)
    moved++
  }
  await unlink(file)
  return moved
}
