const IMAGE_TYPES = ['full-iso', 'disconnected-iso'] as const
export type OsImageType = typeof IMAGE_TYPES[number]

export interface OsImageEntry {
  openshiftVersion: string
  cpuArchitecture: string
  url: string
  version: string
  type: OsImageType
  sha256?: string
}

const URL_SCHEMES = new Set(['https:', 'http:', 'file:'])

/**
 * Parses an `OS_IMAGES` / `RHCOS_VERSIONS` JSON array. Returns the entries and
 * every problem found, so the caller can report all of them at once.
 */
export function parseOsImageEntries (json: string, variable: string): { entries: OsImageEntry[], problems: string[] } {
  const problems: string[] = []
  let raw: unknown
  try {
    raw = JSON.parse(json)
  } catch (err) {
    return { entries: [], problems: [`${variable}: invalid JSON (${(err as Error).message})`] }
  }
  if (!Array.isArray(raw)) {
    return { entries: [], problems: [`${variable}: must be a JSON array of OS image entries`] }
  }
  const entries: OsImageEntry[] = []
  raw.forEach((item: unknown, index: number) => {
    const where = `${variable}[${index}]`
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      problems.push(`${where}: must be an object`)
      return
    }
    const record = item as Record<string, unknown>
    const missing = ['openshift_version', 'cpu_architecture', 'url', 'version']
      .filter(key => typeof record[key] !== 'string' || record[key] === '')
    if (missing.length > 0) {
      problems.push(`${where}: missing or empty ${missing.join(', ')}`)
      return
    }
    const url = record.url as string
    let scheme: string
    try {
      scheme = new URL(url).protocol
    } catch {
      problems.push(`${where}: url is not a valid URL`)
      return
    }
    if (!URL_SCHEMES.has(scheme)) {
      problems.push(`${where}: url scheme ${scheme} is not one of https, http, file`)
      return
    }
    const type = record.type ?? 'full-iso'
    if (!IMAGE_TYPES.includes(type as OsImageType)) {
      problems.push(`${where}: type must be full-iso or disconnected-iso`)
      return
    }
    const sha256 = record.sha256
    if (sha256 !== undefined && (typeof sha256 !== 'string' || !/^[0-9a-fA-F]{64}$/.test(sha256))) {
      problems.push(`${where}: sha256 must be 64 hex digits`)
      return
    }
    for (const key of ['version', 'cpu_architecture'] as const) {
      if (!/^[A-Za-z0-9._-]+$/.test(record[key] as string)) {
        problems.push(`${where}: ${key} may hold only letters, digits, '.', '_' and '-'`)
        return
      }
    }
    entries.push({
      openshiftVersion: record.openshift_version as string,
      cpuArchitecture: record.cpu_architecture as string,
      url,
      version: record.version as string,
      type: type as OsImageType,
      ...(typeof sha256 === 'string' ? { sha256: sha256.toLowerCase() } : {})
    })
  })
  return { entries, problems }
}

/**
 * Compares OpenShift versions numerically by dotted components; a pre-release
 * (`4.18.0-ec.0`) sorts below its release (`4.18.0`).
 */
export function compareOpenshiftVersions (a: string, b: string): number {
  const [aMain, aPre] = splitPrerelease(a)
  const [bMain, bPre] = splitPrerelease(b)
  const aParts = aMain.split('.')
  const bParts = bMain.split('.')
  for (let i = 0; i < Math.max(aParts.length, bParts.length); i++) {
    const diff = compareIdentifiers(aParts[i] ?? '0', bParts[i] ?? '0')
    if (diff !== 0) return diff
  }
  if (aPre === undefined || bPre === undefined) {
    return aPre === bPre ? 0 : aPre === undefined ? 1 : -1
  }
  const aIds = aPre.split('.')
  const bIds = bPre.split('.')
  for (let i = 0; i < Math.max(aIds.length, bIds.length); i++) {
    if (aIds[i] === undefined) return -1
    if (bIds[i] === undefined) return 1
    const diff = compareIdentifiers(aIds[i]!, bIds[i]!)
    if (diff !== 0) return diff
  }
  return 0
}

function splitPrerelease (version: string): [string, string | undefined] {
  const dash = version.indexOf('-')
  return dash === -1 ? [version, undefined] : [version.slice(0, dash), version.slice(dash + 1)]
}

function compareIdentifiers (a: string, b: string): number {
  const aNum = /^\d+$/.test(a)
  const bNum = /^\d+$/.test(b)
  if (aNum && bNum) return Number(a) - Number(b)
  if (aNum !== bNum) return aNum ? -1 : 1
  return a < b ? -1 : a > b ? 1 : 0
}

export function entryKey (entry: Pick<OsImageEntry, 'version' | 'cpuArchitecture' | 'type'>): string {
  return `${entry.version}@${entry.cpuArchitecture}@${entry.type}`
}

/** One entry per `version@arch@type`: the one with the highest openshift_version. */
export function deduplicateEntries (entries: readonly OsImageEntry[]): OsImageEntry[] {
  const byKey = new Map<string, OsImageEntry>()
  for (const entry of entries) {
    const key = entryKey(entry)
    const current = byKey.get(key)
    if (current === undefined || compareOpenshiftVersions(entry.openshiftVersion, current.openshiftVersion) > 0) {
      byKey.set(key, entry)
    }
  }
  return [...byKey.values()]
}

/**
 * Finds the entry a request names: by RHCOS version first, then by
 * openshift_version, always with the same architecture.
 */
export function findEntry (entries: readonly OsImageEntry[], version: string, arch: string): OsImageEntry | undefined {
  const sameArch = entries.filter(entry => entry.cpuArchitecture === arch)
  return sameArch.find(entry => entry.version === version) ??
    sameArch.find(entry => entry.openshiftVersion === version)
}

/** Upstream-compatible file name in DATA_DIR. */
export function isoFileName (entry: Pick<OsImageEntry, 'version' | 'cpuArchitecture' | 'type'>): string {
  return `rhcos-${entry.type}-${entry.version}-${entry.cpuArchitecture}.iso`
}

/** The ISO's content id (sha256, with the size and mtime it describes) beside it in DATA_DIR. */
/** The sparse file an image read from its origin is cached in, until it is complete and renamed to `isoFileName`. */
export function blockCacheFileName (entry: Pick<OsImageEntry, 'type' | 'version' | 'cpuArchitecture'>): string {
  return `${isoFileName(entry)}.blocks`
}

/** Which blocks of the cache file are present. */
export function blockRecordFileName (entry: Pick<OsImageEntry, 'type' | 'version' | 'cpuArchitecture'>): string {
  return `${isoFileName(entry)}.blocks.record`
}

export function contentIdFileName (entry: Pick<OsImageEntry, 'type' | 'version' | 'cpuArchitecture'>): string {
  return `${isoFileName(entry)}.sha256`
}

export function nmstatectlFileName (entry: Pick<OsImageEntry, 'version' | 'cpuArchitecture'>): string {
  return `nmstatectl-${entry.version}-${entry.cpuArchitecture}`
}

/** The gzip cpio of nmstatectl that initrds and minimal ISOs carry, compressed once by the primary for every worker. */
export function nmstateArchiveFileName (entry: Pick<OsImageEntry, 'version' | 'cpuArchitecture'>): string {
  return `${nmstatectlFileName(entry)}.cpio.gz`
}

/** The first OpenShift version whose static networking needs nmstatectl in the initrd. */
const NMSTATE_MIN_OPENSHIFT = '4.18.0-ec.0'

/** OpenShift 4.18 and later configure static networking with nmstatectl from the initrd (disconnected ISOs excepted). */
export function needsNmstate (entry: Pick<OsImageEntry, 'openshiftVersion' | 'type'>): boolean {
  return entry.type !== 'disconnected-iso' && compareOpenshiftVersions(entry.openshiftVersion, NMSTATE_MIN_OPENSHIFT) >= 0
}
