import cluster, { type Worker } from 'node:cluster'
import module from 'node:module'
import { AggregatorRegistry, Counter, Registry, type MetricObjectWithValues, type MetricValue } from 'prom-client'
import type { Config } from '../config.ts'
import { isMessage, type ClusterMessage } from './messages.ts'
import { onTermination } from './shutdown.ts'
import { createLogger } from '../observe/logger.ts'
import { DomainError } from '../errors.ts'
import { cachedBytesGauge, downloadMetrics, METRIC_PREFIX, originMetrics, processMemoryMetrics } from '../observe/metrics.ts'
import { cachePuncher, ImageStore } from '../store/image-store.ts'
import { startHeapTrims } from '../io/heap-trim.ts'

/**
 * A worker's young generation is capped: request handling allocates little (the
 * image bytes move through pooled buffers), and V8's default lets the
 * semi-spaces grow to 16 MiB each, which an idle worker then keeps as RSS.
 */
const WORKER_SEMI_SPACE_MIB = 2

function workerExecArgv (execArgv: readonly string[]): string[] {
  if (execArgv.some(arg => arg.startsWith('--max-semi-space-size'))) return [...execArgv]
  return [...execArgv, `--max-semi-space-size=${WORKER_SEMI_SPACE_MIB}`]
}

/**
 * WORKERS > 1: this process downloads, checks and prepares the OS images once
 * (and tells the workers when each is ready), aggregates /metrics for them,
 * replaces a worker that dies, and drains them all on SIGTERM. The workers
 * share the listening ports and serve every request.
 */
export async function runPrimary (config: Config, workerEnv: Record<string, string> = {}): Promise<void> {
  const log = createLogger(config).child({ role: 'primary' })
  const registry = new Registry()
  processMemoryMetrics(registry, 'primary')
  const restarts = new Counter({ name: `${METRIC_PREFIX}worker_restarts_total`, help: 'Workers that died and were replaced', registers: [registry] })
  const evictions = new EvictionConsent()
  cachedBytesGauge(registry, () => store.cachedBytes())
  // Fetching blocks for the workers and preparing images churn the C heap: it is trimmed as it goes.
  const stopHeapTrims = await startHeapTrims()
  const store = new ImageStore({
    config,
    log,
    metrics: { ...downloadMetrics(registry), readyChanged: () => {} },
    cacheMetrics: originMetrics(registry),
    heldElsewhere: async (key, inode, blocks) => await evictions.held(workers(), key, inode, blocks),
    ...await cachePuncher(config, log)
  })
  // Workers see the configuration the primary settled on (the demo's images and InfraEnvs included).
  const env: Record<string, string> = {
    ...workerEnv,
    OS_IMAGES: JSON.stringify(config.osImages.map(e => ({
      openshift_version: e.openshiftVersion,
      cpu_architecture: e.cpuArchitecture,
      url: e.url,
      version: e.version,
      type: e.type,
      ...(e.sha256 !== undefined ? { sha256: e.sha256 } : {})
    }))),
    ...(config.infraEnvsDir !== undefined ? { INFRAENVS_DIR: config.infraEnvsDir } : {})
  }
  cluster.setupPrimary({ execArgv: workerExecArgv(process.execArgv) })
  const readyMessage = (): ClusterMessage => {
    const keys = store.keys.filter(key => store.isReady(key))
    const nmstateErrors: Record<string, string> = {}
    for (const key of keys) {
      const reason = store.get(key)?.nmstateError
      if (reason !== undefined) nmstateErrors[key] = reason
    }
    const refused: Record<string, string> = {}
    for (const key of store.keys) {
      const reason = store.refusal(key)
      if (reason !== undefined) refused[key] = reason
    }
    return { type: 'ais:ready', keys, nmstateErrors, refused }
  }
  const workers = (): Worker[] => Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined)
  let stopping = false
  const book = new ServingBook()
  const scrapes = new ClusterScrapes()
  const broadcast = (message: ClusterMessage): void => { for (const worker of workers()) if (worker.isConnected()) worker.send(message) }
  let serving = ''
  const updateServing = (): void => {
    const keys = book.serving(store.keys)
    if (keys.join('\n') === serving) return
    serving = keys.join('\n')
    broadcast({ type: 'ais:serving', keys })
  }
  store.onChange(() => broadcast(readyMessage()))
  cluster.on('online', worker => {
    book.worker(worker.id)
    updateServing()
    worker.send(readyMessage())
    worker.send({ type: 'ais:serving', keys: book.serving(store.keys) } satisfies ClusterMessage)
  })
  cluster.on('message', (worker, message: unknown) => {
    if (!isMessage(message)) return
    if (message.type === 'ais:prepared') { book.prepared(worker.id, message.key, message.ready); updateServing(); return }
    if (message.type === 'ais:registry-response') { scrapes.answered(worker.id, message.id, message.metrics); return }
    if (message.type === 'ais:evict-response') { evictions.answered(worker.id, message.id, message.held); return }
    if (message.type === 'ais:served') { store.get(message.key)?.blocks?.served(); return }
    if (message.type === 'ais:bytes-request') {
      const { id } = message
      store.fetchFor(message.key, message.inode, message.offset, message.length, message.readAhead).then(
        () => { if (worker.isConnected()) worker.send({ type: 'ais:bytes-response', id } satisfies ClusterMessage) },
        (err: unknown) => {
          const code = err instanceof DomainError ? err.code : 'IMG_ORIGIN_UNAVAILABLE'
          if (worker.isConnected()) worker.send({ type: 'ais:bytes-response', id, error: { code, message: (err as Error).message } } satisfies ClusterMessage)
        })
      return
    }
    if (message.type !== 'ais:metrics-request') return
    void scrapes.collect(workers(), registry).then(
      text => worker.send({ type: 'ais:metrics-response', id: message.id, text } satisfies ClusterMessage),
      (err: unknown) => log.error({ error: (err as Error).message }, 'cannot aggregate worker metrics'))
  })
  cluster.on('exit', (worker, code, signal) => {
    book.gone(worker.id)
    if (stopping) return
    updateServing()
    log.error({ worker: worker.id, code, signal }, 'worker died; starting another')
    restarts.inc()
    cluster.fork(env)
  })
  await store.start()
  // The workers then find in the compile cache what this process compiled.
  module.flushCompileCache()
  for (let i = 0; i < config.workers; i++) cluster.fork(env)
  log.info({ workers: config.workers, port: config.listenPort, httpPort: config.httpListenPort }, 'workers started')

  onTermination({
    log,
    // The workers have the grace period themselves; they are killed only if they overrun it.
    graceMs: (config.shutdownGraceSeconds + 5) * 1000,
    drain: async () => {
      stopping = true
      const alive = workers()
      const exited = Promise.all(alive.map(w => new Promise(resolve => { if (w.isDead()) resolve(undefined); else w.once('exit', resolve) })))
      for (const worker of alive) worker.process.kill('SIGTERM')
      await exited
      await store.close()
      stopHeapTrims()
    },
    force: () => { for (const w of workers()) w.process.kill('SIGKILL') }
  })
}

/**
 * Before the primary evicts blocks of a cache, every worker forgets them and
 * names those it holds (mapped slices in flight): those stay. A worker that
 * does not answer in time is taken to hold them all.
 */
class EvictionConsent {
  #next = 0
  readonly #pending = new Map<number, (workerId: number, held: number[]) => void>()

  async held (workers: Worker[], key: string, inode: number, blocks: number[], timeoutMs = 5000): Promise<number[]> {
    const id = ++this.#next
    const asked = workers.filter(w => w.isConnected())
    const held = new Set<number>()
    await new Promise<void>(resolve => {
      const waiting = new Set(asked.map(w => w.id))
      const finish = (): void => { clearTimeout(timer); this.#pending.delete(id); resolve() }
      const timer = setTimeout(() => { if (waiting.size > 0) for (const block of blocks) held.add(block); finish() }, timeoutMs)
      this.#pending.set(id, (workerId, theirs) => {
        if (!waiting.delete(workerId)) return
        for (const block of theirs) held.add(block)
        if (waiting.size === 0) finish()
      })
      if (waiting.size === 0) finish()
      for (const worker of asked) worker.send({ type: 'ais:evict-request', id, key, inode, blocks } satisfies ClusterMessage)
    })
    return [...held]
  }

  answered (workerId: number, id: number, held: number[]): void {
    this.#pending.get(id)?.(workerId, held)
  }
}

type RegistryJson = MetricObjectWithValues<MetricValue<string>>[]

/**
 * /metrics of a cluster: every worker's registry and the primary's own, aggregated by prom-client
 * (its gauges by their `aggregator`), so that a family the primary and the workers share has one
 * header. A worker that does not answer in time is left out of that scrape.
 */
class ClusterScrapes {
  #next = 0
  readonly #pending = new Map<number, (workerId: number, metrics: RegistryJson) => void>()

  async collect (workers: Worker[], own: Registry, timeoutMs = 5000): Promise<string> {
    const id = ++this.#next
    const asked = workers.filter(w => w.isConnected())
    const answers: RegistryJson[] = [await own.getMetricsAsJSON()]
    await new Promise<void>(resolve => {
      const waiting = new Set(asked.map(w => w.id))
      const finish = (): void => { clearTimeout(timer); this.#pending.delete(id); resolve() }
      const timer = setTimeout(finish, timeoutMs)
      this.#pending.set(id, (workerId, metrics) => {
        if (!waiting.delete(workerId)) return
        answers.push(metrics)
        if (waiting.size === 0) finish()
      })
      if (waiting.size === 0) finish()
      for (const worker of asked) worker.send({ type: 'ais:registry-request', id } satisfies ClusterMessage)
    })
    return await AggregatorRegistry.aggregate(answers).metrics()
  }

  answered (workerId: number, id: number, metrics: RegistryJson): void {
    this.#pending.get(id)?.(workerId, metrics)
  }
}

/**
 * The primary's book of which worker can serve which image: an image is
 * ready for /health only when every live worker has it prepared, so every
 * worker answers readiness alike.
 */
class ServingBook {
  readonly #prepared = new Map<number, Set<string>>()

  worker (id: number): void { if (!this.#prepared.has(id)) this.#prepared.set(id, new Set()) }
  gone (id: number): void { this.#prepared.delete(id) }

  prepared (id: number, key: string, ready: boolean): void {
    const keys = this.#prepared.get(id) ?? new Set<string>()
    if (ready) keys.add(key)
    else keys.delete(key)
    this.#prepared.set(id, keys)
  }

  /** Keys every live worker can serve (none while there is no worker). */
  serving (keys: readonly string[]): string[] {
    const workers = [...this.#prepared.values()]
    if (workers.length === 0) return []
    return keys.filter(key => workers.every(prepared => prepared.has(key)))
  }
}
