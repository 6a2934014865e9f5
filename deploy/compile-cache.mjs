// Preloaded by the container image (node --import=/app/deploy/compile-cache.mjs server.ts) so that a
// process of any UID finds the compile cache warmed at build time. Plain JavaScript: a TypeScript
// preload would load the TypeScript stripper this cache exists to spare.
//
// Node uses the subdirectory of NODE_COMPILE_CACHE named <version>-<arch>-<V8 cache tag>-<uid>. The
// image's was warmed as uid 1001; an arbitrary UID (OpenShift) has none and cannot create one in a
// read-only /app, so Node ran without a cache. Such a process links a directory of its own uid's name,
// in the first writable place (the temporary directory, else DATA_DIR), to the warmed one and uses
// it: reading only, as the warmed directory is not its own.
import { mkdirSync, readdirSync, symlinkSync } from 'node:fs'
import module from 'node:module'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import v8 from 'node:v8'

const base = process.env.NODE_COMPILE_CACHE
if (module.getCompileCacheDir() === undefined && base !== undefined && base !== '' && process.getuid !== undefined) {
  const tag = `${process.version}-${process.arch}-${v8.cachedDataVersionTag().toString(16).padStart(8, '0')}`
  let warmed
  try {
    warmed = readdirSync(base).find(name => name.startsWith(`${tag}-`))
  } catch { /* no cache was warmed here */ }
  const places = [join(tmpdir(), 'node-compile-cache')]
  if (process.env.DATA_DIR !== undefined && process.env.DATA_DIR !== '') places.push(join(process.env.DATA_DIR, '.node-compile-cache'))
  for (const place of warmed === undefined ? [] : places) {
    try {
      mkdirSync(place, { recursive: true, mode: 0o700 })
      symlinkSync(join(resolve(base), warmed), join(place, `${tag}-${process.getuid()}`))
    } catch (err) {
      if (err.code !== 'EEXIST') continue
    }
    if (module.enableCompileCache(place).status === module.constants.compileCacheStatus.ENABLED) break
  }
}
