// The compile cache the image warms at build time, as uid 1001, serves the service run as 1001 (the image's
// USER) and as an arbitrary UID in group 0 (OpenShift), with the image's CMD and two workers: every module
// of every process comes from the cache, and nothing is written to it.
import t from 'tap'
import { spawn } from 'node:child_process'
import { chownSync, mkdirSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from '../helper.ts'
import { startServerProcess, untilHealthy } from '../fixtures/server-process.ts'

const WARM = fileURLToPath(new URL('../../deploy/warm-compile-cache.ts', import.meta.url))
const PRELOAD = fileURLToPath(new URL('../../deploy/compile-cache.mjs', import.meta.url))
const SERVER_URL = new URL('../../server.ts', import.meta.url).href
const IMAGE_UID = 1001
const OPENSHIFT_UID = 1000650000

const skip = process.getuid?.() !== 0 ? 'runs the service as other uids: needs root' : false

function ownedDir (path: string, uid: number): string {
  mkdirSync(path, { recursive: true })
  chownSync(path, uid, 0)
  return path
}

/** Every file under `dir` with its mode and modification time. */
function listing (dir: string): Map<string, string> {
  const files = new Map<string, string>()
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name)
    const info = statSync(path)
    files.set(path.slice(dir.length), `${(info.mode & 0o7777).toString(8)} ${info.mtimeMs}`)
  }
  return files
}

function count (text: string, needle: string): number {
  return text.split(needle).length - 1
}

t.test('warmed as uid 1001, then used as 1001 and as an arbitrary UID', { skip }, async t => {
  const dir = t.testdir()
  const cache = ownedDir(join(dir, 'cache'), IMAGE_UID)
  const warm = spawn(process.execPath, [WARM], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '', NODE_COMPILE_CACHE: cache, TMPDIR: ownedDir(join(dir, 'build-tmp'), IMAGE_UID) },
    uid: IMAGE_UID,
    gid: 0,
    stdio: ['ignore', 'ignore', 'pipe']
  })
  let warmErrors = ''
  warm.stderr.on('data', (d: Buffer) => { warmErrors += d.toString() })
  const warmExit = await new Promise(resolve => warm.once('exit', resolve))
  t.equal(warmExit, 0, 'the warm step succeeds', warmExit === 0 ? {} : { stderr: warmErrors })

  const tags = readdirSync(cache)
  t.equal(tags.length, 1, 'one directory, for the uid that warmed it')
  t.match(tags[0], new RegExp(`-${IMAGE_UID}$`))
  const warmed = listing(cache)
  t.ok(warmed.size > 100, 'the service\'s modules and their dependencies')
  const modes = new Set([...warmed.values()].map(v => v.split(' ')[0]))
  t.same([...modes].sort(), ['644', '755'], 'readable by every UID')
  t.notOk([...warmed.keys()].some(path => path.split('/').length > 3), 'the workers wrote into the same directory (none nested in it)')

  const cases = [
    { name: 'uid 1001', uid: IMAGE_UID, writableTmp: true },
    { name: 'an arbitrary UID in group 0', uid: OPENSHIFT_UID, writableTmp: true },
    { name: 'an arbitrary UID with no writable temporary directory (read-only root, no /tmp volume)', uid: OPENSHIFT_UID + 1, writableTmp: false }
  ]
  for (const { name, uid, writableTmp } of cases) {
    await t.test(name, async t => {
      const port = await freePort()
      const dataDir = ownedDir(join(dir, `data-${uid}`), uid)
      const server = startServerProcess(t, port, {
        NODE_COMPILE_CACHE: cache,
        NODE_DEBUG_NATIVE: 'COMPILE_CACHE',
        TMPDIR: ownedDir(join(dir, `tmp-${uid}`), writableTmp ? uid : 0),
        DATA_DIR: dataDir,
        WORKERS: '2',
        LOG_LEVEL: 'warn'
      }, dir, { execArgv: ['--max-semi-space-size=2', `--import=${PRELOAD}`], uid, gid: 0 })
      t.equal(await untilHealthy(server), 200, 'healthy')
      t.ok((await fetch(`${server.base}/live`)).ok)
      server.child.kill('SIGTERM')
      t.equal(await server.exited, 0, 'drained and exited')
      const output = server.output()
      t.equal(output.match(new RegExp(`reading cache from \\S+ for StrippedTypeScript ${SERVER_URL}\\.\\.\\.`, 'g'))?.length, 3, 'the primary and both workers looked server.ts up in the cache')
      t.equal(count(output, 'no such file or directory'), 0, 'and found it and every other module there')
      t.equal(count(output, 'was rejected'), 0, 'V8 accepted every cached compilation')
      t.equal(count(output, 'Cannot create cache directory'), uid === IMAGE_UID ? 0 : 1,
        uid === IMAGE_UID ? 'NODE_COMPILE_CACHE serves the uid that warmed it as is' : 'Node\'s own attempt fails in the primary only; the preload finds the warmed cache')
      t.same(listing(cache), warmed, 'nothing was written to the cache')
      if (uid !== IMAGE_UID) {
        const place = writableTmp ? join(dir, `tmp-${uid}`, 'node-compile-cache') : join(dataDir, '.node-compile-cache')
        t.same(readdirSync(place), [tags[0]!.replace(/-\d+$/, `-${uid}`)], `a link named for the uid in ${writableTmp ? 'the temporary directory' : 'DATA_DIR'}`)
      }
    })
  }
})
