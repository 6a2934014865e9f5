import { createHash, randomBytes } from 'node:crypto'
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { IsoKind } from './coreos/customize.ts'
import type { Credential } from './upstream/infra-env-source.ts'

/** What a short link stands for: everything the long URL carried. */
export interface LinkTarget {
  route: 'byid' | 'bytoken' | 'byapikey' | 'images'
  imageId: string
  credential?: Credential
  version: string
  arch: string
  type: IsoKind
}

interface StoredLink extends LinkTarget { code: string, expires: number }

const MAX_LINKS = 50_000

/**
 * Short URLs for BMCs that reject long ones (iDRAC: 255 characters). Codes
 * are 128 random bits, minted once per target and kept until they expire,
 * across restarts (an atomically rewritten file, readable by the owner only,
 * since a link stands in for its credential).
 */
export class ShortLinks {
  readonly #file: string
  readonly #byCode = new Map<string, StoredLink>()
  readonly #byTarget = new Map<string, string>()
  #writing: Promise<void> = Promise.resolve()
  readonly #now: () => number

  private constructor (file: string, now: () => number) {
    this.#file = file
    this.#now = now
  }

  static async open (file: string, now: () => number = Date.now): Promise<ShortLinks> {
    const links = new ShortLinks(file, now)
    try {
      const stored = JSON.parse(await readFile(file, 'utf8')) as StoredLink[]
      for (const link of Array.isArray(stored) ? stored : []) {
        if (typeof link?.code === 'string' && typeof link.expires === 'number' && link.expires > now()) links.#add(link)
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        // A damaged file loses the links, never the service.
        links.#byCode.clear()
      }
    }
    return links
  }

  get size (): number { return this.#byCode.size }

  #add (link: StoredLink): void {
    this.#byCode.set(link.code, link)
    this.#byTarget.set(targetKey(link), link.code)
  }

  #delete (code: string): void {
    const link = this.#byCode.get(code)
    if (link === undefined) return
    this.#byCode.delete(code)
    if (this.#byTarget.get(targetKey(link)) === code) this.#byTarget.delete(targetKey(link))
  }

  /** The code for a target: the existing one while valid, else a new one. */
  async mint (target: LinkTarget, expires: number): Promise<string> {
    const existing = this.#byTarget.get(targetKey(target))
    const current = existing !== undefined ? this.#byCode.get(existing) : undefined
    if (current !== undefined && current.expires > this.#now()) return current.code
    if (existing !== undefined) this.#delete(existing)
    this.#prune()
    const code = randomBytes(16).toString('base64url')
    this.#add({ ...target, code, expires })
    try {
      await this.#save()
    } catch (err) {
      // A link that could not be stored is not handed out: it would not survive a restart.
      this.#delete(code)
      throw err
    }
    return code
  }

  resolve (code: string): LinkTarget | undefined {
    const link = this.#byCode.get(code)
    if (link === undefined) return undefined
    if (link.expires <= this.#now()) {
      this.#delete(code)
      return undefined
    }
    const { code: _code, expires: _expires, ...target } = link
    return target
  }

  #prune (): void {
    const now = this.#now()
    for (const [code, link] of this.#byCode) if (link.expires <= now) this.#delete(code)
    // Bounded: the links closest to expiry go first.
    if (this.#byCode.size >= MAX_LINKS) {
      const oldest = [...this.#byCode.values()].sort((a, b) => a.expires - b.expires).slice(0, this.#byCode.size - MAX_LINKS + 1)
      for (const link of oldest) this.#delete(link.code)
    }
  }

  /** Rewrites the file atomically; one failed write never blocks the next, and leaves no temporary file. */
  #save (): Promise<void> {
    const snapshot = JSON.stringify([...this.#byCode.values()])
    const write = this.#writing.then(async () => {
      await mkdir(dirname(this.#file), { recursive: true })
      const temp = `${this.#file}.${randomBytes(4).toString('hex')}.tmp`
      try {
        await writeFile(temp, snapshot, { mode: 0o600 })
        await rename(temp, this.#file)
      } catch (err) {
        await unlink(temp).catch(() => {})
        throw err
      }
    })
    this.#writing = write.catch(() => {})
    return write
  }
}

function targetKey (target: LinkTarget): string {
  return createHash('sha256').update([target.route, target.imageId, target.credential?.kind, target.credential?.value, target.version, target.arch, target.type].join('\0')).digest('base64url')
}

/** A JWT's `exp` in milliseconds, when it has one. */
export function jwtExpiry (token: string): number | undefined {
  const payload = token.split('.')[1]
  if (payload === undefined) return undefined
  try {
    const claims = JSON.parse(Buffer.from(payload.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8')) as { exp?: unknown }
    return typeof claims.exp === 'number' ? claims.exp * 1000 : undefined
  } catch {
    return undefined
  }
}
