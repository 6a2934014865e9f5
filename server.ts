import Fastify, { LogController, type FastifyInstance } from 'fastify'
import { readFileSync } from 'node:fs'
import { mkdir, stat, unlink, writeFile } from 'node:fs/promises'
import { join, resolve, sep } from 'node:path'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { pino, type DestinationStream, type Logger } from 'pino'
import { appPlugin, type AppOptions } from './app.ts'
import { ConfigError, loadConfig, processEnv, type Config } from './services/config.ts'
import { redactUrl, REDACTED } from './services/redact.ts'
import { demoInstructions, prepareDemo } from './services/demo.ts'
import { markRestrictedPlainHttp } from './plugins/plain-http.ts'
import cluster, { type Worker } from 'node:cluster'
import { AggregatorRegistry, Registry } from 'prom-client'
import { downloadMetrics } from './plugins/image-store.ts'
import { followPrimary, isMessage, primaryMetrics, ServingBook, type ClusterMessage } from './services/cluster.ts'
import { ImageStore } from './services/store/image-store.ts'
import { LARGE_BUFFER_BUDGET, setReadBufferBudget } from './services/compose/composed-image.ts'

/** Slowloris guard: a client must send its headers promptly; the body of a download is never cut. */
const HEADERS_TIMEOUT_MS = 20_000
const REQUEST_TIMEOUT_MS = 60_000
const KEEP_ALIVE_TIMEOUT_MS = 65_000

export function createLogger (config: Pick<Config, 'logLevel'>, destination?: DestinationStream): Logger {
  return pino({
    level: config.logLevel,
    redact: {
      paths: ['req.headers.authorization', 'req.headers["image-token"]', 'headers.authorization', 'headers["image-token"]'],
      censor: REDACTED
    },
    serializers: {
      req: (req: { method?: string, url?: string }) => ({ method: req.method, url: redactUrl(req.url ?? '') }),
      err: pino.stdSerializers.err
    }
  }, destination)
}

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
  const fastify = Fastify({
    loggerInstance: options.logger ?? createLogger(config),
    // plugins/metrics.ts writes the one log line per request (redacted, with bytes and duration).
    logController: new LogController({ disableRequestLogging: true }),
    connectionTimeout: 0,
    // Fastify's own answer to an undecodable URL echoes the URL, credentials included: say less.
    frameworkErrors: function frameworkError (error, _request, reply) {
      const status = error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 400
      void (reply as unknown as { code: (n: number) => { send: (body: unknown) => unknown } }).code(status).send({ code: 'BAD_URL', message: 'malformed request URL' })
    },
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
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    fastify.log.info({ signal, graceSeconds }, 'shutting down')
    const timer = setTimeout(() => {
      fastify.log.warn('grace period over, closing remaining connections')
      fastify.server.closeAllConnections()
      extraServer?.closeAllConnections()
      exit(0)
    }, graceSeconds * 1000)
    timer.unref()
    fastify.close().then(() => exit(0), (err: unknown) => {
      fastify.log.error({ err }, 'error while closing')
      exit(0)
    })
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
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

async function main (): Promise<void> {
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
    // A worker serves what the primary prepares; the primary answered for DATA_DIR and the demo.
    // The read-buffer budget bounds the whole service's memory, so the workers share it.
    setReadBufferBudget(Math.floor(LARGE_BUFFER_BUDGET / config.workers))
    const { fastify, extraServer } = await startServer(config, { app: { imageStore: { follower: followPrimary() }, metrics: { exposition: () => primaryMetrics() } } })
    handleShutdown(fastify, config.shutdownGraceSeconds, process.exit, extraServer)
    return
  }
  try {
    await checkDataDir(config.dataDir)
    if (config.demo) config = await prepareDemo(config)
  } catch (err) {
    process.stderr.write(`assisted-image-service: ${(err as Error).message}\n`)
    process.exit(1)
  }
  const demoUrl = `${config.tls !== undefined ? 'https' : 'http'}://localhost:${config.listenPort}`
  // Port 0 (tests) asks for a port of the OS's choosing: one process, so there is one such port.
  if (config.workers > 1 && config.listenPort !== 0) {
    await runPrimary(config)
    if (config.demo) process.stdout.write(demoInstructions(demoUrl))
    return
  }
  const { fastify, mainPort, extraPort, extraServer } = await startServer(config)
  fastify.log.info({ port: mainPort, httpPort: extraPort, tls: config.tls !== undefined }, 'listening')
  handleShutdown(fastify, config.shutdownGraceSeconds, process.exit, extraServer)
  if (config.demo) process.stdout.write(demoInstructions(`${config.tls !== undefined ? 'https' : 'http'}://localhost:${mainPort}`))
}

/**
 * WORKERS > 1: this process downloads, checks and prepares the OS images once
 * (and tells the workers when each is ready), aggregates /metrics for them,
 * replaces a worker that dies, and drains them all on SIGTERM. The workers
 * share the listening ports and serve every request.
 */
async function runPrimary (config: Config): Promise<void> {
  const log = createLogger(config).child({ role: 'primary' })
  const registry = new Registry()
  const store = new ImageStore({
    config,
    log: { info: (o, m) => log.info(o, m), warn: (o, m) => log.warn(o, m), error: (o, m) => log.error(o, m) },
    metrics: { ...downloadMetrics(registry), readyChanged: () => {} }
  })
  const aggregator = new AggregatorRegistry()
  // Workers see the configuration the primary settled on (the demo's images and InfraEnvs included).
  const env: Record<string, string> = {
    OS_IMAGES: JSON.stringify(config.osImages.map(e => ({ openshift_version: e.openshiftVersion, cpu_architecture: e.cpuArchitecture, url: e.url, version: e.version, type: e.type, ...(e.sha256 !== undefined ? { sha256: e.sha256 } : {}) }))),
    ...(config.infraEnvsDir !== undefined ? { INFRAENVS_DIR: config.infraEnvsDir } : {})
  }
  const readyKeys = (): string[] => store.keys.filter(key => store.isReady(key))
  const workers = (): Worker[] => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
  let stopping = false
  const book = new ServingBook()
  const broadcast = (message: ClusterMessage): void => { for (const worker of workers()) if (worker.isConnected()) worker.send(message) }
  let serving = ''
  const updateServing = (): void => {
    const keys = book.serving(store.keys)
    if (keys.join('\n') === serving) return
    serving = keys.join('\n')
    broadcast({ type: 'ais:serving', keys })
  }
  store.onChange(() => broadcast({ type: 'ais:ready', keys: readyKeys() }))
  cluster.on('online', worker => {
    book.worker(worker.id)
    updateServing()
    worker.send({ type: 'ais:ready', keys: readyKeys() } satisfies ClusterMessage)
    worker.send({ type: 'ais:serving', keys: book.serving(store.keys) } satisfies ClusterMessage)
  })
  cluster.on('message', (worker, message: unknown) => {
    if (!isMessage(message)) return
    if (message.type === 'ais:prepared') { book.prepared(worker.id, message.key, message.ready); updateServing(); return }
    if (message.type !== 'ais:metrics-request') return
    void Promise.all([aggregator.clusterMetrics(), registry.metrics()]).then(
      ([all, own]) => worker.send({ type: 'ais:metrics-response', id: message.id, text: `${all}\n${own}` } satisfies ClusterMessage),
      (err: unknown) => log.error({ error: (err as Error).message }, 'cannot aggregate worker metrics'))
  })
  cluster.on('exit', (worker, code, signal) => {
    book.gone(worker.id)
    if (stopping) return
    updateServing()
    log.error({ worker: worker.id, code, signal }, 'worker died; starting another')
    cluster.fork(env)
  })
  await store.start()
  for (let i = 0; i < config.workers; i++) cluster.fork(env)
  log.info({ workers: config.workers, port: config.listenPort, httpPort: config.httpListenPort }, 'listening')

  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'shutting down the workers')
    const alive = workers()
    const exited = Promise.all(alive.map(w => new Promise(resolve => { if (w.isDead()) resolve(undefined); else w.once('exit', resolve) })))
    for (const worker of alive) worker.process.kill('SIGTERM')
    const timer = setTimeout(() => { for (const w of workers()) w.process.kill('SIGKILL') }, (config.shutdownGraceSeconds + 5) * 1000)
    timer.unref()
    void exited.then(async () => { await store.close(); process.exit(0) })
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
}

if (import.meta.main) {
  main().catch((err: unknown) => {
    process.stderr.write(`assisted-image-service: ${(err as Error).stack ?? String(err)}\n`)
    process.exit(1)
  })
}
