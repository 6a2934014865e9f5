/** ISO 9660 level-1 names, mapped the way genisoimage maps them: 8.3, upper case, [A-Z0-9_]. */
function dChars (text: string): string {
  return text.toUpperCase().replace(/[^A-Z0-9_]/g, '_')
}

function levelOneName (name: string, isDirectory: boolean): { base: string, ext: string } {
  if (isDirectory) return { base: dChars(name).slice(0, 8) || '_', ext: '' }
  const dot = name.lastIndexOf('.')
  const base = dot > 0 ? name.slice(0, dot) : name
  const ext = dot > 0 ? name.slice(dot + 1) : ''
  return { base: dChars(base).slice(0, 8) || '_', ext: dChars(ext).slice(0, 3) }
}

function formatPrimary (base: string, ext: string, isDirectory: boolean): string {
  return isDirectory ? base : `${base}.${ext};1`
}

/**
 * Picks a unique primary identifier within one directory: the preferred one
 * (e.g. the source ISO's) when free, else the 8.3 mapping, else the mapping
 * with its base ending in a counter (`GENERIC1.PRM;1`).
 */
export function uniquePrimaryName (name: string, isDirectory: boolean, taken: Set<string>, preferred?: string): string {
  if (preferred !== undefined && preferred !== '' && !taken.has(preferred)) {
    taken.add(preferred)
    return preferred
  }
  const { base, ext } = levelOneName(name, isDirectory)
  let candidate = formatPrimary(base, ext, isDirectory)
  for (let n = 1; taken.has(candidate); n++) {
    const counter = String(n)
    candidate = formatPrimary(base.slice(0, 8 - counter.length) + counter, ext, isDirectory)
  }
  taken.add(candidate)
  return candidate
}

/**
 * Joliet identifiers are at most 64 UCS-2 characters (103 with -joliet-long,
 * as the CoreOS builders pass); like genisoimage we store no `;1` version.
 */
export function jolietName (name: string): string {
  return name.slice(0, 103)
}

export function encodeUcs2 (text: string): Buffer {
  return Buffer.from(text, 'utf16le').swap16()
}

/** The order of file identifiers in a directory (ISO 9660 9.3): byte-wise, ignoring the version. */
export function compareFileIdentifiers (a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b)
}
