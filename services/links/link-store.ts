/**
 * Where sealed short-link records live: opaque bytes filed under an id, until
 * an expiry. The first record stored under an id wins (every replica derives
 * the same id and the same target for it).
 */
export interface LinkStore {
  get (id: string): Promise<Buffer | undefined>
  put (id: string, record: Buffer, expires: number): Promise<void>
  /** A secret shared by every process that uses this store, created once. */
  secret (): Promise<Buffer>
  close (): Promise<void>
}

/** A link id: the hex sha256 of its code. */
export const LINK_ID = /^[0-9a-f]{64}$/
