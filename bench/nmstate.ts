// nmstatectl extraction from a 1 GiB live rootfs (EROFS with the Fedora CoreOS options, squashfs zstd as RHCOS
// ships it), in-process, next to the erofs-utils / squashfs-tools commands the Go original shells out to.
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ByteSource, findNmstatectl, openFilesystem } from '../services/rootfs/index.ts'
import { decodeXz } from '../services/compression/index.ts'
import { CACHE, has, line, ratio, ROOT } from './lib.ts'

const DEPLOYMENT = 'ostree/deploy/rhcos/deploy/0123456789abcdef.0'
const BINARY = 10 << 20
const FILLER_FILES = 1000
const FILLER_SIZE = 1 << 20

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

function tree (): string {
  const dir = join(CACHE, 'rootfs-tree')
  if (existsSync(join(dir, '.complete'))) return dir
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(join(dir, DEPLOYMENT, 'usr/bin'), { recursive: true })
  // A 10 MB "binary": an ELF header, then half text-like, half random bytes.
  const binary = Buffer.concat([Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0]), Buffer.alloc(BINARY / 2 - 8, 'nmstate '), randomBytes(BINARY / 2)])
  writeFileSync(join(dir, DEPLOYMENT, 'usr/bin/nmstatectl'), binary, { mode: 0o755 })
  for (let i = 0; i < FILLER_FILES; i++) {
    const sub = join(dir, DEPLOYMENT, 'usr/lib', `pkg-${Math.floor(i / 50)}`)
    mkdirSync(sub, { recursive: true })
    writeFileSync(join(sub, `lib-${i}.so`), i % 4 === 0 ? Buffer.alloc(FILLER_SIZE, `file ${i} `) : randomBytes(FILLER_SIZE))
  }
  writeFileSync(join(dir, '.complete'), '')
  return dir
}

/** mkfs.erofs >= 1.8 (lzma, fragments): the system's, or erofs-utils 1.9.3's static build beside the repository. */
function mkfsErofs (): string | undefined {
  const shared = join(ROOT, '../shared/fixtures/erofs/bin/mkfs.erofs.xz')
  const unpacked = join(CACHE, 'mkfs.erofs')
  if (!existsSync(unpacked) && existsSync(shared)) writeFileSync(unpacked, decodeXz(readFileSync(shared), 64 << 20).data, { mode: 0o755 })
  if (existsSync(unpacked)) return unpacked
  const version = spawnSync('mkfs.erofs', ['--version'], { encoding: 'utf8' }).stdout ?? ''
  return /1\.(8|9|\d\d)|[2-9]\.\d/.test(version) ? 'mkfs.erofs' : undefined
}

function dumpErofs (): string | undefined {
  const shared = join(ROOT, '../shared/fixtures/erofs/bin/dump.erofs.xz')
  const unpacked = join(CACHE, 'dump.erofs')
  if (!existsSync(unpacked) && existsSync(shared)) writeFileSync(unpacked, decodeXz(readFileSync(shared), 64 << 20).data, { mode: 0o755 })
  return existsSync(unpacked) ? unpacked : undefined
}

function build (name: string, command: string, args: string[]): string | undefined {
  const image = join(CACHE, name)
  if (existsSync(image)) return image
  const started = performance.now()
  const result = spawnSync(command, args.map(a => a.replace('IMAGE', `${image}.part`)), { stdio: 'ignore' })
  if (result.status !== 0) return undefined
  spawnSync('mv', [`${image}.part`, image])
  process.stdout.write(`  (built ${name} in ${((performance.now() - started) / 1000).toFixed(0)} s)\n`)
  return image
}

async function ours (image: string): Promise<number> {
  const times: number[] = []
  for (let i = 0; i < 5; i++) {
    const started = performance.now()
    const fs = await openFilesystem(await ByteSource.open(image))
    const found = await findNmstatectl(fs)
    await fs.close()
    if (found.data.length !== BINARY) throw new Error('wrong binary')
    times.push(performance.now() - started)
  }
  return median(times)
}

function command (run: () => boolean): number {
  const times: number[] = []
  for (let i = 0; i < 5; i++) {
    const started = performance.now()
    if (!run()) return Number.NaN
    times.push(performance.now() - started)
  }
  return median(times)
}

export async function benchNmstate (): Promise<void> {
  process.stdout.write('nmstatectl extraction from a 1 GiB live rootfs (median of 5; target < 1 s, no temporary files)\n')
  const source = tree()
  const mkfs = mkfsErofs()
  const erofs = mkfs !== undefined
    ? build('rootfs-1g-fcos.erofs', mkfs, ['--quiet', '-zlzma,level=6', '-Eall-fragments,fragdedupe=inode', '-C1048576', '--workers=2', 'IMAGE', source])
    : undefined
  const squashfs = has('mksquashfs') ? build('rootfs-1g-zstd.squashfs', 'mksquashfs', [source, 'IMAGE', '-comp', 'zstd', '-noappend', '-no-progress', '-quiet']) : undefined
  const path = `/${DEPLOYMENT}/usr/bin/nmstatectl`

  if (erofs !== undefined) {
    const mine = await ours(erofs)
    const dump = dumpErofs()
    const theirs = dump !== undefined ? command(() => spawnSync(dump, [`--path=${path}`, '--cat', erofs], { stdio: ['ignore', 'ignore', 'ignore'], maxBuffer: 64 << 20 }).status === 0) : undefined
    line('EROFS lzma (FCOS options): ours', `${mine.toFixed(0)} ms${theirs !== undefined ? ` | dump.erofs --cat ${theirs.toFixed(0)} ms | ${ratio(mine, theirs, false)}` : ''}`)
  } else line('EROFS lzma', 'skipped: needs mkfs.erofs >= 1.8 (or ../shared/fixtures/erofs/bin)')

  if (squashfs !== undefined) {
    const mine = await ours(squashfs)
    const theirs = has('unsquashfs')
      ? command(() => {
        // How the Go original does it: unsquashfs into a temporary directory, then read the file.
        const out = mkdtempSync(join(CACHE, 'unsquashfs-'))
        const ok = spawnSync('unsquashfs', ['-no-progress', '-d', join(out, 'root'), squashfs, path], { stdio: 'ignore' }).status === 0
        const extracted = ok && readdirSync(join(out, 'root', DEPLOYMENT, 'usr/bin')).length === 1
        rmSync(out, { recursive: true, force: true })
        return extracted
      })
      : undefined
    line('squashfs zstd (RHCOS): ours', `${mine.toFixed(0)} ms${theirs !== undefined ? ` | unsquashfs ${theirs.toFixed(0)} ms | ${ratio(mine, theirs, false)}` : ''}`)
  } else line('squashfs zstd', 'skipped: apt-get install squashfs-tools')
  process.stdout.write('\n')
}
