import { randomBytes } from 'node:crypto'
import { link, mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { LINK_ID, type LinkStore } from './link-store.ts'

const PRUNE_EVERY_MS = 10 * 60_000

/**
 * One small file per link under a directory in DATA_DIR (mode 0770, files
 * 0660: the owner and its group, which replicas of other UIDs share, never
 * others). Safe for many processes and for replicas sharing a volume: each link
 * is written once to a temporary name and linked into place (the first one
 * wins, nothing is rewritten), and expired files are removed lazily.
 */
export class FileLinkStore implements LinkStore {
  readonly #dir: string
  readonly #now: () => number
  #lastPrune = 0

  constructor (dir: string, now: () => number = Date.now) {
    this.#dir = dir
    this.#now = now
  }

  async get (id: string): Promise<Buffer | undefined> {
    if (!LINK_ID.test(id)) return undefined
    let text: string
    try {
      text = await readFile(join(this.#dir, id), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
    const parsed = parseRecord(text)
    if (parsed === undefined || parsed.expires <= this.#now()) return undefined
    return parsed.record
  }

  async put (id: string, record: Buffer, expires: number): Promise<void> {
    if (!LINK_ID.test(id)) throw new RangeError('invalid link id')
    await mkdir(this.#dir, { recursive: true, mode: 0o770 })
    const final = join(this.#dir, id)
    const temp = join(this.#dir, `.${id}.${randomBytes(6).toString('hex')}.tmp`)
    try {
      await writeFile(temp, JSON.stringify({ expires, record: record.toString('base64') }), { mode: 0o660 })
      // link(), not io/atomic-write.ts: a rename lets the last writer win, and here the first record stays.
      try {
        await link(temp, final)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        // Someone stored this id first; replace it only if it has expired.
        const current = parseRecord(await readFile(final, 'utf8').catch(() => ''))
        if (current === undefined || current.expires <= this.#now()) await rename(temp, final)
      }
    } finally {
      await unlink(temp).catch(() => {})
    }
    await this.#prune()
  }

  async #prune (): Promise<void> {
    const now = this.#now()
    if (now - this.#lastPrune < PRUNE_EVERY_MS) return
    this.#lastPrune = now
    for (const name of await readdir(this.#dir).catch(() => [])) {
      if (!LINK_ID.test(name)) continue
      const parsed = parseRecord(await readFile(join(this.#dir, name), 'utf8').catch(() => ''))
      if (parsed === undefined || parsed.expires <= now) await unlink(join(this.#dir, name)).catch(() => {})
    }
  }

  async secret (): Promise<Buffer> {
    await mkdir(this.#dir, { recursive: true, mode: 0o770 })
    const path = join(this.#dir, 'secret')
    const existing = await readFile(path, 'utf8').catch(() => undefined)
    if (existing !== undefined && /^[0-9a-f]{64}$/.test(existing.trim())) return Buffer.from(existing.trim(), 'hex')
    // Created once: linked into place, so two processes starting together agree on one.
    const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`
    try {
      await writeFile(temp, randomBytes(32).toString('hex'), { mode: 0o660 })
      await link(temp, path).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'EEXIST') throw err })
    } finally {
      await unlink(temp).catch(() => {})
    }
    const stored = (await readFile(path, 'utf8')).trim()
    if (!/^[0-9a-f]{64}$/.test(stored)) throw new Error(`${path} is not a valid short-link secret; remove it to create a new one`)
    return Buffer.from(stored, 'hex')
  }

  async close (): Promise<void> {}
}

function parseRecord (text: string): { expires: number, record: Buffer } | undefined {
  try {
    const value = JSON.parse(text) as { expires?: unknown, record?: unknown }
    if (typeof value.expires !== 'number' || typeof value.record !== 'string') return undefined
    return { expires: value.expires, record: Buffer.from(value.record, 'base64') }
  } catch {
    return undefined
  }
}
