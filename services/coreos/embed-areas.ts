import { EmbedAreaInvalid, EmbedAreaTooSmall } from '../errors.ts'

/** What the embed-area code needs of an ISO: path lookup and positional reads. */
export interface IsoView {
  lookup (path: string): { byteOffset: number, size: number } | undefined
  read (offset: number, length: number): Promise<Buffer>
}

export interface EmbedArea {
  /** What it is, for error messages (`Ignition`, `kernel arguments in EFI/redhat/grub.cfg`, ...). */
  name: string
  /** Absolute byte offset in the image. */
  offset: number
  length: number
}

export interface KargsArea extends EmbedArea {
  path: string
  pad: string
  end: string
  /** Kernel arguments the area holds now (pad, end and whitespace trimmed). */
  current: string
}

export interface KargsJson {
  default: string
  files: Array<{ path: string, offset: number, pad?: string, end?: string }>
  size: number
}

export interface EmbedAreas {
  ignition?: EmbedArea
  kargs: KargsArea[]
  ramdisk?: EmbedArea
  kargsJson?: KargsJson
}

export const RAMDISK_PATH = '/images/assisted_installer_custom.img'
const KARGS_SANITY_LIMIT = 2048
const DEFAULT_KARG_FILES = ['/EFI/redhat/grub.cfg', '/EFI/fedora/grub.cfg', '/EFI/centos/grub.cfg', '/isolinux/isolinux.cfg']
const KARG_MARKER = /\n(#+)# COREOS_KARG_EMBED_AREA/

/**
 * Locates the Ignition, kernel-argument and ramdisk embed areas of a CoreOS
 * live ISO (coreos-formats.md §2, §4, §5). Reads only small JSON/config files.
 */
export async function findEmbedAreas (iso: IsoView): Promise<EmbedAreas> {
  const areas: EmbedAreas = { kargs: [] }
  const ignition = await findIgnitionArea(iso)
  if (ignition !== undefined) areas.ignition = ignition
  const ramdisk = iso.lookup(RAMDISK_PATH)
  if (ramdisk !== undefined) areas.ramdisk = { name: 'ramdisk', offset: ramdisk.byteOffset, length: ramdisk.size }

  const kargsFile = iso.lookup('/coreos/kargs.json')
  if (kargsFile !== undefined) {
    const kargsJson = parseKargsJson(await readText(iso, kargsFile))
    areas.kargsJson = kargsJson
    for (const file of kargsJson.files) {
      const entry = iso.lookup(`/${file.path}`)
      if (entry === undefined) throw new EmbedAreaInvalid(`kargs.json names ${file.path}, which is not in the ISO`)
      if (file.offset + kargsJson.size > entry.size) throw new EmbedAreaInvalid(`kargs.json area in ${file.path} runs past the end of the file`)
      const pad = file.pad ?? '#'
      const end = file.end ?? '\n'
      const offset = entry.byteOffset + file.offset
      const region = (await iso.read(offset, kargsJson.size)).toString('latin1')
      areas.kargs.push({ name: `kernel arguments in ${file.path}`, path: file.path, offset, length: kargsJson.size, pad, end, current: trimKargs(region, pad, end) })
    }
  } else {
    // No kargs.json: find the embed marker in the default config files, as upstream does.
    for (const path of DEFAULT_KARG_FILES) {
      const entry = iso.lookup(path)
      if (entry === undefined || entry.size > 1 << 20) continue
      const text = (await iso.read(entry.byteOffset, entry.size)).toString('latin1')
      const match = KARG_MARKER.exec(text)
      if (match === null) continue
      // The area runs from the newline ending the kernel line to before the last '#'.
      areas.kargs.push({ name: `kernel arguments in ${path.slice(1)}`, path: path.slice(1), offset: entry.byteOffset + match.index, length: match[1]!.length, pad: '#', end: '\n', current: '' })
    }
  }
  const kargValues = new Set(areas.kargs.map(a => a.current))
  if (kargValues.size > 1) throw new EmbedAreaInvalid('kernel argument areas disagree on their current value')
  return areas
}

async function findIgnitionArea (iso: IsoView): Promise<EmbedArea | undefined> {
  const info = iso.lookup('/coreos/igninfo.json')
  if (info !== undefined) {
    let parsed: { file?: unknown, offset?: unknown, length?: unknown }
    try {
      parsed = JSON.parse(await readText(iso, info)) as typeof parsed
    } catch {
      throw new EmbedAreaInvalid('coreos/igninfo.json is not valid JSON')
    }
    if (typeof parsed.file !== 'string') throw new EmbedAreaInvalid('coreos/igninfo.json names no file')
    const file = iso.lookup(`/${parsed.file}`)
    if (file === undefined) throw new EmbedAreaInvalid(`igninfo.json names ${parsed.file}, which is not in the ISO`)
    const offset = typeof parsed.offset === 'number' ? parsed.offset : 0
    // Upstream treats offset 0 and length 0 as "the whole file".
    const length = typeof parsed.length === 'number' && parsed.length > 0 ? parsed.length : file.size - offset
    if (offset < 0 || length <= 0 || offset + length > file.size) throw new EmbedAreaInvalid(`igninfo.json area ${offset}+${length} is outside ${parsed.file}`)
    return { name: 'Ignition', offset: file.byteOffset + offset, length }
  }
  const image = iso.lookup('/images/ignition.img')
  return image === undefined ? undefined : { name: 'Ignition', offset: image.byteOffset, length: image.size }
}

/** Tolerant kargs.json parsing: any key order, optional pad/end, trailing spaces. */
export function parseKargsJson (text: string): KargsJson {
  let raw: unknown
  try {
    raw = JSON.parse(text.trim())
  } catch {
    throw new EmbedAreaInvalid('coreos/kargs.json is not valid JSON')
  }
  const value = raw as Partial<KargsJson>
  if (typeof value.default !== 'string' || typeof value.size !== 'number' || !Array.isArray(value.files)) {
    throw new EmbedAreaInvalid('coreos/kargs.json lacks default, files or size')
  }
  if (value.size > KARGS_SANITY_LIMIT || value.default.length > value.size) throw new EmbedAreaInvalid(`coreos/kargs.json size ${value.size} is not sane`)
  for (const f of value.files) {
    if (typeof f?.path !== 'string' || typeof f.offset !== 'number' || f.offset < 0) throw new EmbedAreaInvalid('coreos/kargs.json has a malformed file entry')
  }
  return { default: value.default, files: value.files, size: value.size }
}

function trimKargs (region: string, pad: string, end: string): string {
  let text = region
  while (text.endsWith(pad)) text = text.slice(0, -pad.length)
  while (text.endsWith(end)) text = text.slice(0, -end.length)
  return text.trim()
}

async function readText (iso: IsoView, entry: { byteOffset: number, size: number }): Promise<string> {
  if (entry.size > 1 << 20) throw new EmbedAreaInvalid('embed-area description file is too large')
  return (await iso.read(entry.byteOffset, entry.size)).toString('utf8')
}

/** The bytes of a kargs area holding `current` plus `extra` (end char, then padding). */
export function renderKargs (area: KargsArea, extra: readonly string[]): Buffer {
  const text = [area.current, ...extra].filter(s => s !== '').join(' ')
  const body = area.current === '' && extra.length > 0 ? ` ${text}` : text
  if (body.length + area.end.length > area.length) {
    throw new EmbedAreaTooSmall(`${area.name}: ${body.length + area.end.length} bytes of kernel arguments do not fit the ${area.length}-byte area`)
  }
  const out = Buffer.alloc(area.length, area.pad, 'latin1')
  out.write(body + area.end, 0, 'latin1')
  return out
}
