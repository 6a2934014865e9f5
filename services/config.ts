import { availableCpus } from './process/cpus.ts'
import { createPublicKey } from 'node:crypto'
import { accessSync, constants, existsSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseOsImageEntries, type OsImageEntry } from './store/os-image-entry.ts'

export type Env = Readonly<Record<string, string | undefined>>

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const
export type LogLevel = typeof LOG_LEVELS[number]

const FETCH_MODES = ['lazy', 'on-demand', 'eager'] as const
export type OsImagesFetch = typeof FETCH_MODES[number]

const QUANTITY_SUFFIXES: Record<string, number> = { '': 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12 }

/** Bytes as Kubernetes writes a quantity (`50Gi`, `500M`, `1073741824`); undefined when it is not one. */
export function parseByteQuantity (text: string): number | undefined {
  const match = /^(\d+)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$/.exec(text)
  if (match === null) return undefined
  const bytes = Number(match[1]) * QUANTITY_SUFFIXES[match[2] ?? '']!
  return Number.isSafeInteger(bytes) ? bytes : undefined
}

export interface Config {
  assistedService: {
    scheme: 'http' | 'https'
    host?: string
    caFile?: string
    timeoutSeconds: number
    /** Largest Ignition or ramdisk answer read from assisted-service. */
    maxBodyBytes: number
  }
  dataDir: string
  dataTempDir: string
  listenPort: number
  httpListenPort?: number
  tls?: { certFile: string, keyFile: string }
  imageServiceBaseUrl: string
  logLevel: LogLevel
  maxConcurrentRequests: number
  requestQueueTimeoutSeconds: number
  upstreamCacheTtlSeconds: number
  /** Processes serving requests; 1 keeps a single process. */
  workers: number
  /** Valkey/Redis for short links (REDIS_URL or VALKEY_URL); unset: files in DATA_DIR. */
  redisUrl?: string
  /** Shared secret short-link codes derive from; unset: created once in the link store. */
  shortLinkSecret?: string
  /** A response body that makes no progress this long is cut off (stalled clients hold slots and buffers). */
  sendIdleTimeoutSeconds: number
  /** Serve image files from read-only memory maps (MMAP_IMAGE_FILES); false: read them into buffers. */
  mmapImageFiles: boolean
  /** Entries as configured (before deduplication). Empty in demo mode until the demo is prepared. */
  osImages: OsImageEntry[]
  osImagesRequestHeaders: Record<string, string>
  osImagesRequestQueryParams: Record<string, string>
  osImageDownloadCaFile?: string
  insecureSkipVerify: boolean
  /** How OS images are had (OS_IMAGES_FETCH): read from the origin on demand and filled behind, on demand only, or whole first. */
  osImagesFetch: OsImagesFetch
  /** Whole downloads and background fills running at once (OS_IMAGES_PARALLEL_DOWNLOADS). */
  osImagesParallelDownloads: number
  /** Bytes the image caches may hold together (OS_IMAGES_CACHE_MAX_BYTES); unset: no budget. */
  osImagesCacheMaxBytes?: number
  /** Seconds a request waits for bytes absent from the cache before it fails (OS_IMAGES_FETCH_TIMEOUT). */
  osImagesFetchTimeoutSeconds: number
  allowedDomains: string[]
  infraEnvsDir?: string
  proxy: { http?: string, https?: string, noProxy?: string }
  underPressure: { maxEventLoopDelayMs: number, maxHeapUsedBytes: number }
  shutdownGraceSeconds: number
  shortLinkTtlSeconds: number
  tokens: {
    /** assisted-service's EC_PUBLIC_KEY_PEM (P-256): /byapikey/ and api_key tokens are verified with it. */
    publicKeyPem?: string
    /** Clock skew allowed when a token's exp or nbf is checked. */
    clockToleranceSeconds: number
  }
  /** No OS_IMAGES and no ASSISTED_SERVICE_HOST: serve the built-in demo. */
  demo: boolean
}

export class ConfigError extends Error {
  readonly problems: string[]

  constructor (problems: string[]) {
    super(`invalid configuration: ${problems.join('; ')}`)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/**
 * Builds the configuration from an environment object, collecting every
 * problem before failing so an operator fixes them all in one go.
 */
export function loadConfig (env: Env, cwd = process.cwd()): Config {
  const problems: string[] = []
  const value = (name: string): string | undefined => {
    const v = env[name]
    return v === undefined || v.trim() === '' ? undefined : v.trim()
  }
  const integer = (name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const raw = value(name)
    if (raw === undefined) return fallback
    if (!/^-?\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
      problems.push(`${name}: must be an integer between ${min} and ${max}, got "${raw}"`)
      return fallback
    }
    return Number(raw)
  }
  const boolean = (name: string, fallback = false): boolean => {
    const raw = value(name)?.toLowerCase()
    if (raw === undefined) return fallback
    if (['1', 'true', 'yes', 'on'].includes(raw)) return true
    if (['0', 'false', 'no', 'off'].includes(raw)) return false
    problems.push(`${name}: must be true or false, got "${raw}"`)
    return fallback
  }
  const readableFile = (name: string, path: string | undefined): string | undefined => {
    if (path === undefined) return undefined
    try {
      accessSync(path, constants.R_OK)
    } catch {
      problems.push(`${name}: cannot read file ${path}`)
    }
    return path
  }
  const stringMap = (name: string): Record<string, string> => {
    const raw = value(name)
    if (raw === undefined) return {}
    try {
      const parsed: unknown = JSON.parse(raw)
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed) ||
          Object.values(parsed).some(v => typeof v !== 'string')) {
        problems.push(`${name}: must be a JSON object of string values`)
        return {}
      }
      return parsed as Record<string, string>
    } catch {
      problems.push(`${name}: invalid JSON`)
      return {}
    }
  }

  const scheme = (value('ASSISTED_SERVICE_SCHEME') ?? 'http').toLowerCase()
  if (scheme !== 'http' && scheme !== 'https') {
    problems.push(`ASSISTED_SERVICE_SCHEME: must be http or https, got "${scheme}"`)
  }
  const host = value('ASSISTED_SERVICE_HOST')
  if (host !== undefined && !/^[A-Za-z0-9.\-[\]:]+$/.test(host)) {
    problems.push(`ASSISTED_SERVICE_HOST: must be host[:port], got "${host}"`)
  }

  const logLevelRaw = (value('LOG_LEVEL') ?? value('LOGLEVEL') ?? 'info').toLowerCase()
  const logLevel = LOG_LEVELS.includes(logLevelRaw as LogLevel) ? logLevelRaw as LogLevel : 'info'
  if (logLevel !== logLevelRaw) {
    problems.push(`LOG_LEVEL: unknown level "${logLevelRaw}" (one of ${LOG_LEVELS.join(', ')})`)
  }

  const listenPort = integer('LISTEN_PORT', 8080, 0, 65535)
  const httpListenPortRaw = value('HTTP_LISTEN_PORT')
  const httpListenPort = httpListenPortRaw === undefined ? undefined : integer('HTTP_LISTEN_PORT', 0, 0, 65535)

  const certFile = readableFile('HTTPS_CERT_FILE', value('HTTPS_CERT_FILE'))
  const keyFile = readableFile('HTTPS_KEY_FILE', value('HTTPS_KEY_FILE'))
  if ((certFile === undefined) !== (keyFile === undefined)) {
    problems.push('HTTPS_CERT_FILE and HTTPS_KEY_FILE: set both or neither')
  }

  const osImagesVar = value('OS_IMAGES') !== undefined ? 'OS_IMAGES' : value('RHCOS_VERSIONS') !== undefined ? 'RHCOS_VERSIONS' : undefined
  let osImages: OsImageEntry[] = []
  if (osImagesVar !== undefined) {
    const parsed = parseOsImageEntries(value(osImagesVar)!, osImagesVar)
    problems.push(...parsed.problems)
    osImages = parsed.entries
    if (parsed.problems.length === 0 && osImages.length === 0) {
      problems.push(`${osImagesVar}: lists no OS image`)
    }
  }
  const demo = osImagesVar === undefined && host === undefined
  if (osImagesVar === undefined && (host !== undefined || value('INFRAENVS_DIR') !== undefined)) {
    problems.push('OS_IMAGES: required when ASSISTED_SERVICE_HOST or INFRAENVS_DIR is set (the demo runs only with neither)')
  }
  const infraEnvsDir = value('INFRAENVS_DIR')
  if (!demo && host === undefined && infraEnvsDir === undefined) {
    problems.push('ASSISTED_SERVICE_HOST: required unless INFRAENVS_DIR is set')
  }

  const dataDir = resolve(cwd, value('DATA_DIR') ?? 'data')
  // With TLS on LISTEN_PORT, links and the minimal ISO's rootfs URL must say https.
  const baseUrl = value('IMAGE_SERVICE_BASE_URL') ?? `${certFile !== undefined && keyFile !== undefined ? 'https' : 'http'}://localhost:${listenPort}`
  try {
    const url = new URL(baseUrl)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme')
  } catch {
    problems.push(`IMAGE_SERVICE_BASE_URL: must be an http(s) URL, got "${baseUrl}"`)
  }

  const redisUrl = value('REDIS_URL') ?? value('VALKEY_URL')
  if (redisUrl !== undefined && !/^(redis|rediss|valkey|valkeys):\/\//.test(redisUrl)) {
    problems.push(`REDIS_URL: must be a redis:// or rediss:// URL, got "${redisUrl.replace(/\/\/[^@]*@/, '//…@')}"`)
  }
  const publicKeyPem = tokenPublicKey(value('EC_PUBLIC_KEY_PEM'), value('EC_PUBLIC_KEY_PEM_FILE'), problems)
  const fetchMode = (value('OS_IMAGES_FETCH') ?? 'lazy').toLowerCase()
  if (!FETCH_MODES.includes(fetchMode as OsImagesFetch)) problems.push(`OS_IMAGES_FETCH: must be one of ${FETCH_MODES.join(', ')}, got "${fetchMode}"`)
  const cacheMaxRaw = value('OS_IMAGES_CACHE_MAX_BYTES')
  const cacheMaxBytes = cacheMaxRaw === undefined ? undefined : parseByteQuantity(cacheMaxRaw)
  if (cacheMaxRaw !== undefined && (cacheMaxBytes === undefined || cacheMaxBytes < 64 << 20)) {
    problems.push(`OS_IMAGES_CACHE_MAX_BYTES: must be bytes (at least 64Mi), optionally with a Ki, Mi, Gi or Ti suffix, got "${cacheMaxRaw}"`)
  }
  const allowedDomains = (value('ALLOWED_DOMAINS') ?? '').split(',').map(d => d.trim()).filter(d => d !== '')

  const config: Config = {
    assistedService: {
      scheme: scheme === 'https' ? 'https' : 'http',
      ...(host !== undefined ? { host } : {}),
      ...optional('caFile', readableFile('ASSISTED_SERVICE_API_TRUSTED_CA_FILE', value('ASSISTED_SERVICE_API_TRUSTED_CA_FILE') ?? value('HTTPS_CA_FILE'))),
      timeoutSeconds: integer('ASSISTED_SERVICE_TIMEOUT', 60, 1),
      maxBodyBytes: integer('UPSTREAM_MAX_BODY_BYTES', 8 << 20, 1024)
    },
    dataDir,
    dataTempDir: resolve(cwd, value('DATA_TEMP_DIR') ?? join(dataDir, 'tmp')),
    listenPort,
    ...optional('httpListenPort', httpListenPort),
    ...(certFile !== undefined && keyFile !== undefined ? { tls: { certFile, keyFile } } : {}),
    imageServiceBaseUrl: baseUrl.replace(/\/+$/, ''),
    logLevel,
    maxConcurrentRequests: integer('MAX_CONCURRENT_REQUESTS', 400, 1),
    requestQueueTimeoutSeconds: integer('REQUEST_QUEUE_TIMEOUT', 60, 1),
    sendIdleTimeoutSeconds: integer('SEND_IDLE_TIMEOUT', 120, 1),
    mmapImageFiles: boolean('MMAP_IMAGE_FILES', true),
    workers: integer('WORKERS', availableCpus(), 1, 256),
    ...optional('redisUrl', redisUrl),
    ...optional('shortLinkSecret', value('SHORT_LINK_SECRET')),
    upstreamCacheTtlSeconds: integer('UPSTREAM_CACHE_TTL', 30, 0),
    osImages,
    osImagesRequestHeaders: stringMap('OS_IMAGES_REQUEST_HEADERS'),
    osImagesRequestQueryParams: stringMap('OS_IMAGES_REQUEST_QUERY_PARAMS'),
    ...optional('osImageDownloadCaFile', readableFile('OS_IMAGE_DOWNLOAD_TRUSTED_CA_FILE', value('OS_IMAGE_DOWNLOAD_TRUSTED_CA_FILE'))),
    insecureSkipVerify: boolean('INSECURE_SKIP_VERIFY'),
    osImagesFetch: FETCH_MODES.includes(fetchMode as OsImagesFetch) ? fetchMode as OsImagesFetch : 'lazy',
    osImagesParallelDownloads: integer('OS_IMAGES_PARALLEL_DOWNLOADS', 2, 1, 64),
    ...optional('osImagesCacheMaxBytes', cacheMaxBytes),
    osImagesFetchTimeoutSeconds: integer('OS_IMAGES_FETCH_TIMEOUT', 30, 1, 3600),
    allowedDomains,
    ...optional('infraEnvsDir', infraEnvsDir === undefined ? undefined : resolve(cwd, infraEnvsDir)),
    proxy: {
      ...optional('http', value('HTTP_PROXY') ?? value('http_proxy')),
      ...optional('https', value('HTTPS_PROXY') ?? value('https_proxy')),
      ...optional('noProxy', value('NO_PROXY') ?? value('no_proxy'))
    },
    underPressure: {
      maxEventLoopDelayMs: integer('MAX_EVENT_LOOP_DELAY_MS', 1000, 0),
      maxHeapUsedBytes: integer('MAX_HEAP_USED_BYTES', 0, 0)
    },
    shutdownGraceSeconds: integer('SHUTDOWN_GRACE_PERIOD', 30, 0),
    shortLinkTtlSeconds: integer('SHORT_LINK_TTL', 7 * 24 * 3600, 1),
    tokens: {
      ...optional('publicKeyPem', publicKeyPem),
      clockToleranceSeconds: integer('JWT_CLOCK_TOLERANCE_SECONDS', 60, 0, 3600)
    },
    demo
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return config
}

/** The P-256 public key of EC_PUBLIC_KEY_PEM or the file EC_PUBLIC_KEY_PEM_FILE names, as PEM. */
function tokenPublicKey (pem: string | undefined, file: string | undefined, problems: string[]): string | undefined {
  if (pem !== undefined && file !== undefined) {
    problems.push('EC_PUBLIC_KEY_PEM and EC_PUBLIC_KEY_PEM_FILE: set one, not both')
    return undefined
  }
  const name = file !== undefined ? 'EC_PUBLIC_KEY_PEM_FILE' : 'EC_PUBLIC_KEY_PEM'
  let text = pem
  if (file !== undefined) {
    try {
      text = readFileSync(file, 'utf8')
    } catch {
      problems.push(`EC_PUBLIC_KEY_PEM_FILE: cannot read file ${file}`)
      return undefined
    }
  }
  if (text === undefined) return undefined
  // A PEM pasted into a one-line variable often carries its newlines as \n.
  if (!text.includes('\n') && text.includes('\\n')) text = text.replaceAll('\\n', '\n')
  try {
    const key = createPublicKey(text)
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      problems.push(`${name}: must be a P-256 (ES256) key, as assisted-service's local authentication uses`)
      return undefined
    }
    return key.export({ type: 'spki', format: 'pem' }).toString()
  } catch {
    problems.push(`${name}: not a PEM public key`)
    return undefined
  }
}

function optional<K extends string, V> (key: K, v: V | undefined): { [P in K]?: V } {
  return (v === undefined ? {} : { [key]: v }) as { [P in K]?: V }
}

/**
 * Parses a `.env` file: `KEY=value` lines, `#` comments, optional `export `,
 * single or double quotes around the value.
 */
export function parseDotEnv (text: string): Record<string, string> {
  const result: Record<string, string> = {}
  for (const line of text.split(/\r?\n/)) {
    const match = /^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line)
    if (match === null) continue
    let v = match[2]!
    if ((v.startsWith('"') && v.endsWith('"') && v.length >= 2) || (v.startsWith("'") && v.endsWith("'") && v.length >= 2)) {
      v = v.slice(1, -1)
    } else {
      v = v.replace(/\s+#.*$/, '')
    }
    result[match[1]!] = v
  }
  return result
}

/** The process environment, with `.env` (when present) filling what is unset. */
export function processEnv (cwd = process.cwd()): Env {
  const dotEnvPath = resolve(cwd, '.env')
  const fromFile = existsSync(dotEnvPath) ? parseDotEnv(readFileSync(dotEnvPath, 'utf8')) : {}
  return { ...fromFile, ...process.env }
}
