import { spawn } from 'node:child_process'
import { mkdtemp, open, readFile, rm } from 'node:fs/promises'
import { join } from 'node:path'
import type { FileRange } from '../coreos/pxe.ts'

const NMSTATECTL = 'usr/bin/nmstatectl'
const MAX_BINARY = 256 << 20

function run (command: string, args: string[]): Promise<{ code: number, stderr: string }> {
  return new Promise(resolve => {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => { if (stderr.length < 4096) stderr += d.toString() })
    child.on('error', err => resolve({ code: -1, stderr: err.message }))
    child.on('close', code => resolve({ code: code ?? -1, stderr }))
  })
}

/**
 * Pulls /usr/bin/nmstatectl out of the live rootfs inside the ISO: rootfs.img
 * is a newc cpio whose first member is root.squashfs (or root.erofs), so the
 * filesystem starts at a known offset and is read in place (no copy).
 * Needs `unsquashfs` (squashfs-tools) or `dump.erofs` (erofs-utils).
 */
export async function extractNmstatectl (isoPath: string, rootfs: FileRange, tempDir: string): Promise<Buffer> {
  const fh = await open(isoPath, 'r')
  let header: Buffer
  try {
    header = Buffer.alloc(512)
    await fh.read(header, 0, 512, rootfs.offset)
  } finally {
    await fh.close()
  }
  if (header.toString('latin1', 0, 6) !== '070701') throw new Error('rootfs.img does not start with a newc cpio header')
  const nameSize = parseInt(header.toString('latin1', 94, 102), 16)
  const name = header.toString('latin1', 110, 110 + nameSize - 1)
  const dataOffset = rootfs.offset + Math.ceil((110 + nameSize) / 4) * 4
  const dir = await mkdtemp(join(tempDir, 'nmstate-'))
  try {
    if (name === 'root.squashfs') {
      const out = join(dir, 'root')
      const result = await run('unsquashfs', ['-no-progress', '-offset', String(dataOffset), '-d', out, isoPath, NMSTATECTL])
      if (result.code !== 0) throw new Error(`unsquashfs failed: ${result.stderr.trim().split('\n').pop() ?? result.code}`)
      return await readLimited(join(out, NMSTATECTL))
    }
    if (name === 'root.erofs') {
      const out = join(dir, 'nmstatectl')
      const result = await new Promise<{ code: number, stderr: string }>(resolve => {
        const child = spawn('dump.erofs', [`--offset=${dataOffset}`, `--path=/${NMSTATECTL}`, '--cat', isoPath], { stdio: ['ignore', 'pipe', 'pipe'] })
        const chunks: Buffer[] = []
        let stderr = ''
        child.stdout.on('data', (d: Buffer) => chunks.push(d))
        child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
        child.on('error', err => resolve({ code: -1, stderr: err.message }))
        child.on('close', async code => {
          if (code === 0) await import('node:fs/promises').then(fs => fs.writeFile(out, Buffer.concat(chunks)))
          resolve({ code: code ?? -1, stderr })
        })
      })
      if (result.code !== 0) throw new Error(`dump.erofs failed: ${result.stderr.trim().split('\n').pop() ?? result.code}`)
      return await readLimited(out)
    }
    throw new Error(`rootfs.img starts with ${JSON.stringify(name)}, not root.squashfs or root.erofs`)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

async function readLimited (path: string): Promise<Buffer> {
  const data = await readFile(path)
  if (data.length === 0 || data.length > MAX_BINARY) throw new Error(`nmstatectl has an implausible size of ${data.length} bytes`)
  return data
}
