import type { FastifyInstance } from 'fastify'
import cluster from 'node:cluster'
import { readFileSync } from 'node:fs'
import { mkdir, stat, unlink, writeFile } from 'node:fs/promises'
import module from 'node:module'
import { dirname, join, resolve, sep } from 'node:path'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import type { AppOptions } from './app.ts'
import { ConfigError, loadConfig, processEnv, type Config } from './services/config.ts'
import { createLogger } from './services/observe/logger.ts'
import { onTermination } from './services/process/shutdown.ts'

export { createLogger }

/** Slowloris guard: a client must send its headers promptly; the body of a download is never cut. */
const HEADERS_TIMEOUT_MS = 20_000
const REQUEST_TIMEOUT_MS = 60_000
const KEEP_ALIVE_TIMEOUT_MS = 65_000

export interface ServerOptions {
  logger?: Logger
  /** Extra app options (tests shorten the image store's retry timing). */
  app?: Omit<AppOptions, 'config'>
  /** Called after the app is registered and before listening (tests add routes here). */
  prepare?: (fastify: FastifyInstance) => void | Promise<void>
}

function tuneServer (server: http.Server): void {
  // Node closes CONNECT requests without a word when nobody listens: answer them like any other method.
  server.on('connect', (_request: http.IncomingMessage, socket: import('node:stream').Duplex) => {
    socket.end('HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, HEAD\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
  })
  server.headersTimeout = HEADERS_TIMEOUT_MS
  server.requestTimeout = REQUEST_TIMEOUT_MS
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS
  server.timeout = 0
}

/**
 * Builds the Fastify instance with its listeners. The main server is HTTPS when
 * a certificate is configured; HTTP_LISTEN_PORT adds a plain-HTTP server that
 * shares the same routes (restricted to PXE routes and probes under TLS).
 */
export async function buildServer (config: Config, options: ServerOptions = {}): Promise<{ fastify: FastifyInstance, extraServer?: http.Server }> {
  let extraServer: http.Server | undefined
  const { tls, httpListenPort, listenPort } = config
  // Loaded here, not at the top: a cluster's primary never serves HTTP and need not hold the HTTP stack.
  const [{ default: Fastify, LogController }, { appPlugin }, { markRestrictedPlainHttp }, { errorBody, schemaErrorFormatter }] = await Promise.all([
    import('fastify'), import('./app.ts'), import('./plugins/app/plain-http.ts'), import('./plugins/app/errors.ts')
  ])
  const fastify = Fastify({
    loggerInstance: options.logger ?? createLogger(config),
    // plugins/app/request-log.ts writes the one log line per request (redacted, with bytes and duration).
    logController: new LogController({ disableRequestLogging: true }),
    connectionTimeout: 0,
    // Fastify's own answer to an undecodable URL echoes the URL, credentials included: say less.
    frameworkErrors: function frameworkError (error, _request, reply) {
      const status = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 400
      void (reply as unknown as { code: (n: number) => { send: (body: unknown) => unknown } }).code(status).send(errorBody('BAD_URL', 'malformed request URL'))
    },
    schemaErrorFormatter,
    keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    requestTimeout: REQUEST_TIMEOUT_MS,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    routerOptions: { ignoreDuplicateSlashes: false, maxParamLength: 8192 },
    serverFactory (handler) {
      const main = tls === undefined
        ? http.createServer(handler)
        : https.createServer({ cert: readFileSync(tls.certFile), key: readFileSync(tls.keyFile) }, handler)
      tuneServer(main)
      // Port 0 means "any free port", so two zeros are two listeners.
      if (httpListenPort !== undefined && (httpListenPort !== listenPort || listenPort === 0)) {
        extraServer = http.createServer(tls === undefined
          ? handler
          : (req, res) => { markRestrictedPlainHttp(req); handler(req, res) })
        tuneServer(extraServer)
      }
      return main
    }
  })
  await fastify.register(appPlugin, { ...options.app, config })
  fastify.addHook('onClose', async function closeExtraServer () {
    if (extraServer?.listening !== true) return
    extraServer.closeIdleConnections()
    await new Promise<void>(resolve => extraServer!.close(() => resolve()))
  })
  // The instance's server type is a union of http/https; routes only need the common surface.
  return { fastify: fastify as unknown as FastifyInstance, ...(extraServer !== undefined ? { extraServer } : {}) }
}

/** Starts listening; returns the bound ports (useful with port 0 in tests). */
export async function startServer (config: Config, options: ServerOptions & { host?: string } = {}) {
  const host = options.host ?? '0.0.0.0'
  const built = await buildServer(config, options)
  await options.prepare?.(built.fastify)
  await built.fastify.listen({ port: config.listenPort, host })
  const mainPort = (built.fastify.server.address() as AddressInfo).port
  let extraPort: number | undefined
  if (built.extraServer !== undefined) {
    const extra = built.extraServer
    await new Promise<void>((resolve, reject) => {
      extra.once('error', reject)
      extra.listen(config.httpListenPort, host, () => { extra.off('error', reject); resolve() })
    })
    extraPort = (extra.address() as AddressInfo).port
  }
  return { ...built, mainPort, extraPort }
}

/**
 * Stops accepting connections, lets in-flight responses finish for up to the
 * grace period, then exits 0.
 */
export function handleShutdown (fastify: FastifyInstance, graceSeconds: number, exit: (code: number) => void = process.exit, extraServer?: http.Server): void {
  onTermination({
    log: fastify.log,
    graceMs: graceSeconds * 1000,
    drain: async () => { await fastify.close() },
    force: () => {
      fastify.server.closeAllConnections()
      extraServer?.closeAllConnections()
      exit(0)
    },
    exit
  })
}

/**
 * DATA_DIR must be a directory we can write (it receives multi-GB downloads):
 * tell the operator in one line at startup rather than failing later.
 */
export async function checkDataDir (dir: string): Promise<void> {
  const probe = join(dir, `.write-check-${process.pid}`)
  try {
    // One level at a time: Node's recursive mkdir never returns under /proc.
    const parts = resolve(dir).split(sep).filter(p => p !== '')
    for (let i = 1; i <= parts.length; i++) {
      const path = sep + parts.slice(0, i).join(sep)
      const info = await stat(path).catch((err: NodeJS.ErrnoException) => { if (err.code === 'ENOENT') return undefined; throw err })
      if (info === undefined) await mkdir(path)
      else if (!info.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' })
    }
    await writeFile(probe, '')
    await unlink(probe)
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException
    throw new Error(`DATA_DIR ${dir} is not a writable directory (${code ?? message})`)
  }
}

/**
 * Node keeps the modules it compiled (TypeScript already stripped) in a cache
 * directory: a process that finds them there never loads the TypeScript
 * stripper, about 25 MiB of every process's memory. NODE_COMPILE_CACHE picks
 * the directory (the container image ships one filled at build time); else
 * Node's default under the temporary directory. Returns the directory, for the workers
 * (deploy/compile-cache.mjs finds one for a UID the image's cache was not warmed as).
 */
function useCompileCache (): string | undefined {
  module.enableCompileCache()
  // The directory in use is NODE_COMPILE_CACHE's subdirectory named after Node's version and the uid; the
  // workers are handed its parent, or Node would nest another such subdirectory in it.
  const directory = module.getCompileCacheDir()
  return directory === undefined ? undefined : dirname(directory)
}

/**
 * OpenShift runs the service as an arbitrary UID in group 0 and shares a volume through that group, so
 * what the service writes gives the group the owner's permissions (files 0664, directories 0775, short
 * links 0660/0770) and another UID of the group can read and replace it. One umask rather than a mode at
 * every write: downloads, sidecars, the demo's files and short links alike. Others keep the umask's restrictions.
 */
function shareWithGroup (): void {
  const previous = process.umask(0o077)
  process.umask(previous & ~0o070)
}

async function main (): Promise<void> {
  const compileCache = useCompileCache()
  shareWithGroup()
  let config: Config
  try {
    config = loadConfig(processEnv())
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`assisted-image-service: invalid configuration:\n${err.problems.map(p => `  - ${p}`).join('\n')}\n`)
      process.exit(1)
    }
    throw err
  }
  if (cluster.isWorker) {
    const { followPrimary, primaryMetrics } = await import('./services/process/worker.ts')
    // A worker serves what the primary prepares; the primary answered for DATA_DIR and the demo.
    const { fastify, extraServer } = await startServer(config, {
      app: { imageStore: { follower: followPrimary() }, metrics: { exposition: () => primaryMetrics() } }
    })
    handleShutdown(fastify, config.shutdownGraceSeconds, process.exit, extraServer)
    module.flushCompileCache()
    return
  }
  const demo = config.demo ? await import('./services/coreos/demo.ts') : undefined
  try {
    await checkDataDir(config.dataDir)
    if (demo !== undefined) config = await demo.prepareDemo(config)
  } catch (err) {
    process.stderr.write(`assisted-image-service: ${(err as Error).message}\n`)
    process.exit(1)
  }
  const scheme = config.tls !== undefined ? 'https' : 'http'
  // Port 0 (tests) asks for a port of the OS's choosing: one process, so there is one such port.
  if (config.workers > 1 && config.listenPort !== 0) {
    const { runPrimary } = await import('./services/process/primary.ts')
    await runPrimary(config, compileCache !== undefined ? { NODE_COMPILE_CACHE: compileCache } : {})
    if (demo !== undefined) process.stdout.write(demo.demoInstructions(`${scheme}://localhost:${config.listenPort}`))
    return
  }
  const { fastify, mainPort, extraPort, extraServer } = await startServer(config)
  fastify.log.info({ port: mainPort, httpPort: extraPort, tls: config.tls !== undefined }, 'listening')
  handleShutdown(fastify, config.shutdownGraceSeconds, process.exit, extraServer)
  module.flushCompileCache()
  if (demo !== undefined) process.stdout.write(demo.demoInstructions(`${scheme}://localhost:${mainPort}`))
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    process.stderr.write(`assisted-image-service: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
