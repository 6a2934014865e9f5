import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomFillSync } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, writeSync } from 'node:fs'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { buildSyntheticIso } from '../services/coreos/synthetic-iso.ts'
import { MODE } from '../services/cpio/newc.ts'

export const CACHE = fileURLToPath(new URL('./.cache/', import.meta.url))
export const ROOT = fileURLToPath(new URL('../', import.meta.url))

export function has (tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0
}

export function line (label: string, value: string): void {
  process.stdout.write(`  ${label.padEnd(58)} ${value}\n`)
}

export function ratio (ours: number, anchor: number | undefined, higherIsBetter = true): string {
  if (anchor === undefined || anchor === 0) return ''
  const r = higherIsBetter ? ours / anchor : anchor / ours
  return `(${r.toFixed(2)}x)`
}

/** A ~1 GiB CoreOS-layout ISO with a real (random, non-sparse) rootfs, cached between runs. */
export async function benchIso (sizeMiB = 1024): Promise<string> {
  const dir = `${CACHE}iso-${sizeMiB}`
  const volumeId = 'rhcos-9.6.20250101-0'
  const iso = `${dir}/${volumeId}-x86_64.iso`
  if (existsSync(iso)) return iso
  mkdirSync(dir, { recursive: true })
  const rootfs = `${dir}/rootfs.img`
  const size = sizeMiB << 20
  const name = 'root.squashfs\0'
  const header = `070701${[0, MODE.file | 0o644, 0, 0, 1, 0, size - 124, 0, 0, 0, 0, name.length, 0].map(n => n.toString(16).padStart(8, '0')).join('')}${name}`
  const fd = openSync(rootfs, 'w')
  const chunk = Buffer.alloc(8 << 20)
  for (let written = 0; written < size; written += chunk.length) {
    randomFillSync(chunk)
    if (written === 0) { Buffer.from(header, 'latin1').copy(chunk); chunk.write('hsqs', 124, 'latin1') }
    writeSync(fd, chunk, 0, Math.min(chunk.length, size - written))
  }
  closeSync(fd)
  await buildSyntheticIso({ dir, volumeId, rootfsFile: rootfs, kernelSize: 12 << 20 })
  return iso
}

export function freePort (): Promise<number> {
  return new Promise(resolve => {
    const server = http.createServer().listen(0, '127.0.0.1', () => {
      const port = (server.address() as AddressInfo).port
      server.close(() => resolve(port))
    })
  })
}

export async function waitFor (url: string, timeoutMs = 60_000): Promise<number> {
  const started = performance.now()
  for (;;) {
    try {
      const res = await fetch(url)
      await res.arrayBuffer()
      if (res.status === 200) return performance.now() - started
    } catch { /* not yet */ }
    if (performance.now() - started > timeoutMs) throw new Error(`${url} never answered 200`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

export function startProcess (command: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const child = spawn(command, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] })
  child.stderr!.on('data', () => {})
  return child
}

/** Downloads with curl (one process per client) and returns bytes per second overall. */
export async function curlThroughput (url: string, clients: number): Promise<number> {
  const started = performance.now()
  const sizes = await Promise.all(Array.from({ length: clients }, () => new Promise<number>((resolve, reject) => {
    // -k: the HTTPS runs use a self-signed certificate made for the run.
    const child = spawn('curl', ['-s', '-k', '-o', '/dev/null', '-w', '%{size_download}', url])
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.on('close', code => code === 0 ? resolve(Number(out)) : reject(new Error(`curl exited ${code}`)))
  })))
  return sizes.reduce((a, b) => a + b, 0) / ((performance.now() - started) / 1000)
}

/** Random Range requests with wrk: the rate, the 99th percentile latency and the errors it saw. */
export async function rangeLoad (
  url: string, size: number, connections: number, seconds: number, rangeBytes = 262144
): Promise<{ rate: number, p99Ms: number, errors: string } | undefined> {
  if (!has('wrk')) return undefined
  const script = `${CACHE}range-${rangeBytes}.lua`
  const { writeFileSync } = await import('node:fs')
  writeFileSync(script, `math.randomseed(42)\nrequest = function()\n  local s = math.random(0, ${size - rangeBytes})\n  return wrk.format("GET", nil, { Range = "bytes=" .. s .. "-" .. (s + ${rangeBytes - 1}) })\nend\n`)
  const stdout = await new Promise<string>(resolve => {
    const child = spawn('wrk', ['-t', '2', '-c', String(connections), '-d', `${seconds}s`, '--latency', '-s', script, url])
    let out = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.on('close', () => resolve(out))
  })
  const rate = /Requests\/sec:\s+([\d.]+)/.exec(stdout)
  const p99 = /^\s+99%\s+([\d.]+)(us|ms|s)$/m.exec(stdout)
  if (rate === null || p99 === null) return undefined
  const unit = { us: 0.001, ms: 1, s: 1000 }[p99[2] as 'us' | 'ms' | 's']
  const errors = stdout.split('\n').filter(l => /Non-2xx|Socket errors/.test(l)).join('; ').trim()
  return { rate: Number(rate[1]), p99Ms: Number(p99[1]) * unit, errors: errors === '' ? '0 errors' : errors }
}

/** Random Range requests of `rangeBytes` (256 KiB by default) over `connections` keep-alive connections for `seconds`. */
export async function rangeRate (url: string, size: number, connections: number, seconds: number, rangeBytes = 262144): Promise<number> {
  if (has('wrk')) {
    const script = `${CACHE}range-${rangeBytes}.lua`
    const { writeFileSync } = await import('node:fs')
    writeFileSync(script, `math.randomseed(42)\nrequest = function()\n  local s = math.random(0, ${size - rangeBytes})\n  return wrk.format("GET", nil, { Range = "bytes=" .. s .. "-" .. (s + ${rangeBytes - 1}) })\nend\n`)
    // Asynchronously: a fake assisted-service may live in this process and must keep answering.
    const result = await new Promise<{ stdout: string, stderr: string }>(resolve => {
      const child = spawn('wrk', ['-t', '2', '-c', String(connections), '-d', `${seconds}s`, '-s', script, url])
      let stdout = ''
      let stderr = ''
      child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
      child.on('close', () => resolve({ stdout, stderr }))
    })
    const m = /Requests\/sec:\s+([\d.]+)/.exec(result.stdout)
    if (process.env.BENCH_DEBUG !== undefined) process.stderr.write(result.stdout + result.stderr)
    if (/Non-2xx|Socket errors/.test(result.stdout)) process.stdout.write(`  (wrk: ${result.stdout.split('\n').filter(l => /Non-2xx|Socket errors/.test(l)).join('; ').trim()})\n`)
    if (m !== null) return Number(m[1])
  }
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections })
  let done = 0
  const deadline = performance.now() + seconds * 1000
  await Promise.all(Array.from({ length: connections }, async () => {
    while (performance.now() < deadline) {
      const start = Math.floor(Math.random() * (size - rangeBytes))
      await new Promise<void>((resolve, reject) => {
        http.get(url, { agent, headers: { range: `bytes=${start}-${start + rangeBytes - 1}` } }, res => {
          res.on('data', () => {})
          res.on('end', () => { done++; resolve() })
        }).on('error', reject)
      })
    }
  }))
  agent.destroy()
  return done / seconds
}
