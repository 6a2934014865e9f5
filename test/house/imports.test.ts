// The layering the READMEs promise, checked on the source: routes -> plugins -> services, nothing
// back up, no Fastify inside services/, and no import cycle anywhere.
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const TREES = ['plugins', 'routes', 'services']

function sources (): string[] {
  const found = ['app.ts', 'server.ts']
  const walk = (dir: string): void => {
    for (const entry of readdirSync(join(ROOT, dir), { withFileTypes: true })) {
      const path = join(dir, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.ts')) found.push(path)
    }
  }
  for (const tree of TREES) walk(tree)
  return found.sort()
}

/** Every module a file imports, type-only and dynamic imports included: relative ones as repository paths. */
function importsOf (file: string): { local: string[], packages: string[] } {
  const text = readFileSync(join(ROOT, file), 'utf8')
  const specifiers = [...text.matchAll(/(?:^|\n)\s*(?:import|export)\s[^'";]*?from\s+'([^']+)'|import\(\s*'([^']+)'\s*\)/g)].map(m => m[1] ?? m[2]!)
  const local = specifiers.filter(s => s.startsWith('.')).map(s => normalize(join(dirname(file), s)))
  const packages = specifiers.filter(s => !s.startsWith('.') && !s.startsWith('node:'))
  return { local, packages }
}

const files = sources()
const graph = new Map(files.map(f => [f, importsOf(f)]))

t.test('every relative import names a file of the tree', async t => {
  for (const [file, { local }] of graph) {
    for (const target of local) t.ok(graph.has(target), `${file} -> ${target}`)
  }
})

t.test('no import cycle', async t => {
  // Tarjan's strongly connected components; a component of more than one file is a cycle.
  let index = 0
  const order = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const cycles: string[][] = []
  const visit = (file: string): void => {
    order.set(file, index); low.set(file, index); index++
    stack.push(file); onStack.add(file)
    for (const next of graph.get(file)?.local ?? []) {
      if (!graph.has(next)) continue
      if (!order.has(next)) {
        visit(next)
        low.set(file, Math.min(low.get(file)!, low.get(next)!))
      } else if (onStack.has(next)) {
        low.set(file, Math.min(low.get(file)!, order.get(next)!))
      }
    }
    if (low.get(file) === order.get(file)) {
      const component: string[] = []
      let member: string
      do { member = stack.pop()!; onStack.delete(member); component.push(member) } while (member !== file)
      if (component.length > 1 || graph.get(file)!.local.includes(file)) cycles.push(component.sort())
    }
  }
  for (const file of files) if (!order.has(file)) visit(file)
  t.same(cycles, [], 'modules that import each other, directly or around a loop')
})

t.test('routes -> plugins -> services, and no Fastify inside services/', async t => {
  const layer = (file: string) => file.split('/')[0]!
  for (const [file, { local, packages }] of graph) {
    const from = layer(file)
    for (const target of local) {
      const to = layer(target)
      if (from === 'services') t.ok(to === 'services', `${file} imports only services/ (${relative(dirname(file), target)})`)
      if (from === 'plugins') t.ok(to === 'plugins' || to === 'services', `${file} imports no route (${target})`)
    }
    if (from === 'services') {
      // @fastify/error makes the error catalog's classes; it knows nothing of requests or replies.
      const fastify = packages.filter(p => (p === 'fastify' || p.startsWith('@fastify/') || p.startsWith('fastify-')) && p !== '@fastify/error')
      t.same(fastify, [], `${file} uses no Fastify package`)
    }
  }
})

t.test('each folder under services/ and plugins/ says what lives there', async t => {
  for (const tree of ['services', 'plugins']) {
    for (const entry of readdirSync(join(ROOT, tree), { withFileTypes: true })) {
      if (!entry.isDirectory()) continue
      const readme = join(ROOT, tree, entry.name, 'README.md')
      let text = ''
      try { text = readFileSync(readme, 'utf8') } catch { /* missing */ }
      t.ok(text.length > 80, `${tree}/${entry.name}/README.md`)
      const modules = readdirSync(join(ROOT, tree, entry.name)).filter(n => n.endsWith('.ts'))
      for (const module of modules) t.ok(text.includes(module.replace(/\.ts$/, '')), `${tree}/${entry.name}/README.md names ${module}`)
    }
  }
})
