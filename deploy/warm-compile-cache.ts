// Fills Node's compile cache (NODE_COMPILE_CACHE) the way the service itself
// fills it: starts the built-in demo with two workers as the image's CMD does,
// waits until it is healthy, and stops it. A process that later finds its modules there neither
// strips TypeScript nor compiles them again (about 25 MiB less per process).
// The container image runs this at build time as uid 1001: node deploy/warm-compile-cache.ts
// Node writes the cache for its owner only (files 0600); it is then made readable by
// every UID (deploy/compile-cache.mjs lets an arbitrary one use it).
import { spawn } from 'node:child_process'
import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises'
import module from 'node:module'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const HEALTHY_WITHIN_MS = 60_000

async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as { port: number }
  await new Promise(resolve => server.close(resolve))
  return port
}

export async function warmCompileCache (cacheDir: string): Promise<void> {
  const dataDir = await mkdtemp(join(tmpdir(), 'ais-warm-'))
  const port = await freePort()
  const child = spawn(process.execPath, [`--import=${join(import.meta.dirname, 'compile-cache.mjs')}`, join(import.meta.dirname, '..', 'server.ts')], {
    env: { ...process.env, NODE_COMPILE_CACHE: cacheDir, DATA_DIR: dataDir, LISTEN_PORT: String(port), WORKERS: '2', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit']
  })
  const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
  try {
    const deadline = Date.now() + HEALTHY_WITHIN_MS
    for (;;) {
      const healthy = await fetch(`http://127.0.0.1:${port}/health`).then(r => r.ok, () => false)
      if (healthy) break
      if (child.exitCode !== null) throw new Error(`the service exited (${child.exitCode}) before it was healthy`)
      if (Date.now() > deadline) throw new Error('the service was not healthy in time')
      await new Promise(resolve => setTimeout(resolve, 200))
    }
    // Every worker has served: each flushed what it compiled.
    await fetch(`http://127.0.0.1:${port}/live`)
  } finally {
    child.kill('SIGTERM')
    await exited
    await rm(dataDir, { recursive: true, force: true })
  }
  // This process's own modules too, now rather than at its exit, after the files are made readable.
  module.flushCompileCache()
  for (const entry of await readdir(cacheDir, { recursive: true, withFileTypes: true })) {
    await chmod(join(entry.parentPath, entry.name), entry.isDirectory() ? 0o755 : 0o644)
  }
}

if (import.meta.main) {
  const cacheDir = process.env.NODE_COMPILE_CACHE
  if (cacheDir === undefined || cacheDir === '') {
    process.stderr.write('warm-compile-cache: set NODE_COMPILE_CACHE to the directory to fill\n')
    process.exit(2)
  }
  await warmCompileCache(cacheDir)
}
