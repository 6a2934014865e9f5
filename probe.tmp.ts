import http from 'node:http'
import { spawn } from 'node:child_process'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { loadMemoryMapper } from './services/compose/memory-map.ts'
import { openSync, fstatSync } from 'node:fs'
const ISO = '/work/main/bench/.cache/iso-1024/rhcos-9.6.20250101-0-x86_64.iso'
const mapper = await loadMemoryMapper()
const CH = Number(process.env.CH ?? 4) << 20
async function run (prefault: boolean) {
  const fd = openSync(ISO, 'r'); const size = fstatSync(fd).size
  const region = mapper.map(fd, size)
  if (prefault) { const t = performance.now(); await region.populate(0, size); console.log('populate ms', (performance.now() - t).toFixed(0)) }
  const bytes = region.bytes
  let worst = 0
  const server = http.createServer(async (req, res) => {
    res.writeHead(200, { 'content-length': size })
    for (let off = 0; off < size; off += CH) {
      const t0 = performance.now()
      const ok = res.write(bytes.subarray(off, Math.min(size, off + CH)))
      worst = Math.max(worst, performance.now() - t0)
      if (!ok) await new Promise(r => res.once('drain', r)); else await new Promise(r => setImmediate(r))
    }
    res.end()
  })
  await new Promise<void>(r => server.listen(18778, '127.0.0.1', r))
  const h = monitorEventLoopDelay({ resolution: 5 }); h.enable()
  const t0 = performance.now()
  await new Promise(r => spawn('curl', ['-s', '-o', '/dev/null', 'http://127.0.0.1:18778/']).on('close', r))
  h.disable()
  console.log(prefault ? 'prefaulted' : 'lazy      ', 'GB/s', (size / (performance.now() - t0) / 1e6).toFixed(2), 'worst write ms', worst.toFixed(1), 'loop max ms', (h.max / 1e6).toFixed(1))
  await new Promise(r => server.close(r)); region.unmap()
}
for (let i = 0; i < 2; i++) { await run(false); await run(true) }
