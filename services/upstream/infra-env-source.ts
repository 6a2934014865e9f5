import type { IsoKind } from '../coreos/customize.ts'
import { UpstreamBadKargs } from '../errors.ts'

/** The one credential forwarded to assisted-service, and how. */
export type Credential =
  | { kind: 'api_key', value: string }
  | { kind: 'image_token', value: string }
  | { kind: 'authorization', value: string }

export interface IgnitionAnswer { data: Buffer, lastModified?: Date }

/** Where per-host content comes from: assisted-service, or a local directory. */
export interface InfraEnvSource {
  ignition (imageId: string, isoType: IsoKind | undefined, credential: Credential | undefined, signal?: AbortSignal): Promise<IgnitionAnswer>
  /** undefined: no ramdisk (204). */
  ramdisk (imageId: string, credential: Credential | undefined, signal?: AbortSignal): Promise<Buffer | undefined>
  kernelArguments (imageId: string, credential: Credential | undefined, signal?: AbortSignal): Promise<string[]>
  close? (): Promise<void>
}

/**
 * `kernel_arguments` of an InfraEnv: null/absent is none, else a string holding
 * a JSON array of `{"operation":"append","value":"..."}`.
 */
export function parseKernelArguments (value: unknown): string[] {
  if (value === null || value === undefined || value === '') return []
  const bad = (why: string) => new UpstreamBadKargs(why)
  if (typeof value !== 'string') throw bad('not a string')
  let parsed: unknown
  try {
    parsed = JSON.parse(value)
  } catch {
    throw bad('not JSON')
  }
  if (!Array.isArray(parsed)) throw bad('not a list')
  return parsed.map(item => {
    const op = item as { operation?: unknown, value?: unknown }
    if (op?.operation !== 'append') throw bad(`operation ${JSON.stringify(op?.operation)} is not supported`)
    if (typeof op.value !== 'string' || op.value.trim() === '') throw bad('empty value')
    // Anything that could end the kernel line or the config file is refused.
    if (hasControlCharacter(op.value)) throw bad('control characters in a value')
    return op.value.trim()
  })
}

/** C0 controls and DEL: they would break the kernel command line or the JSON it is embedded in. */
function hasControlCharacter (value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const code = value.charCodeAt(i)
    if (code < 0x20 || code === 0x7f) return true
  }
  return false
}
