import t from 'tap'
import { createHash } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { createReadStream, findNmstatectl, lookup, openLiveRootfs, readFile, walk } from '../../../services/rootfs/index.ts'
import { compareTree, openImage, REPO_ROOTFS, SHARED_FIXTURES, sharedFiles, sharedSkip, unpackXz, type ExpectedEntry } from '../../fixtures/rootfs-images.ts'
import { NMSTATECTL_PATH, writeRootfsTree, type TreeEntry } from '../../fixtures/rootfs-tree.ts'
import { missingTools, run } from '../../fixtures/tools.ts'

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex')

function fromManifest (entries: Array<{ path: string, type: string, mode: string, size?: number, sha256?: string, target?: string }>): ExpectedEntry[] {
  return entries.map(e => ({ ...e, path: e.path.replace(/^\//, ''), mode: parseInt(e.mode.replace(/^0o/, ''), 8) }))
}

function treeExpectations (tree: TreeEntry[]): ExpectedEntry[] {
  return tree.map(e => ({ ...e }))
}

t.test('the committed tiny images read back the generated tree, entry by entry', async t => {
  const dir = t.testdir()
  const tree = treeExpectations(writeRootfsTree(join(dir, 'tree')))
  for (const image of ['tiny-fcos.erofs', 'tiny-rhcos.squashfs']) {
    const fs = await openImage(join(REPO_ROOTFS, image))
    t.teardown(() => fs.close())
    await compareTree(t, fs, tree, image)

    const found = await findNmstatectl(fs)
    t.equal(found.path, NMSTATECTL_PATH, `${image}: nmstatectl from the ostree deployment`)
    t.equal(sha256(found.data), tree.find(e => e.path === NMSTATECTL_PATH)!.sha256)

    const a = await lookup(fs, NMSTATECTL_PATH)
    const b = await lookup(fs, NMSTATECTL_PATH.replace('nmstatectl', 'nmstate-hardlink'))
    t.equal(a!.stat.ino, b!.stat.ino, `${image}: hard links share an inode`)
    const viaLink = await lookup(fs, NMSTATECTL_PATH.replace('nmstatectl', 'nmstatectl-link'), { follow: true })
    t.equal(viaLink!.id, a!.id, `${image}: a relative symlink resolves`)
    const escape = await lookup(fs, 'etc/escape', { follow: true })
    t.equal(escape, undefined, `${image}: "/../../../../etc/passwd" resolves inside the image, where it does not exist`)
    t.equal(await lookup(fs, 'bin/nmstatectl', { follow: true }).then(i => i?.id), a!.id, `${image}: an absolute-looking path through a symlinked directory`)

    const streamed: Buffer[] = []
    for await (const chunk of createReadStream(fs, a!, 65_536)) streamed.push(chunk as Buffer)
    t.ok(streamed.length > 1 && Buffer.concat(streamed).equals(found.data), `${image}: streamed in ${streamed.length} chunks, same bytes`)

    const walked = []
    for await (const entry of walk(fs, { maxEntries: 10_000, maxDepth: 32 })) walked.push(entry.path)
    t.equal(walked.length, tree.length + 1, `${image}: the walk visits every entry once`)
    await t.rejects(async () => { for await (const _ of walk(fs, { maxEntries: 50, maxDepth: 32 })) { /* drain */ } }, /more than 50 entries/, `${image}: walks are bounded`)
    await t.rejects(readFile(fs, a!, 1000), /exceeds the 1000-byte limit/)
    await t.rejects(fs.list(a!), /not a directory/)
  }
})

t.test('every entry of every EROFS image made by erofs-utils 1.9.3', { skip: sharedSkip('erofs') }, async t => {
  const dir = t.testdir()
  for (const manifestPath of sharedFiles('erofs', '.manifest.json')) {
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8'))
    const image = unpackXz(join(SHARED_FIXTURES, 'erofs', manifest.image_xz), dir)
    t.equal(sha256(readFileSync(image)), manifest.image_sha256, `${manifest.image}: our xz decoder unpacked it`)
    const fs = await openImage(image)
    t.equal(fs.format, 'erofs')
    await compareTree(t, fs, fromManifest(manifest.entries), manifest.image)
    await fs.close()
  }
})

t.test('nmstatectl in every real-layout rootfs.img, decoys skipped, every entry identical', { skip: sharedSkip('rootfs') }, async t => {
  const dir = t.testdir()
  const manifest = JSON.parse(readFileSync(join(SHARED_FIXTURES, 'rootfs/manifest.json'), 'utf8'))
  const expected = fromManifest(manifest.entries)
  for (const xz of sharedFiles('rootfs', '.rootfs.img.xz')) {
    const path = unpackXz(xz, dir)
    const fs = await openLiveRootfs(path, 0, statSync(path).size)
    t.teardown(() => fs.close())
    const found = await findNmstatectl(fs)
    t.equal(`/${found.path}`, manifest.nmstatectl[0].path, `${path}: found in the deployment`)
    t.equal(sha256(found.data), manifest.nmstatectl[0].sha256, `${path}: right bytes`)
    await compareTree(t, fs, expected, path)
  }
})

t.test('squashfs variants made here with mksquashfs', { skip: missingTools('mksquashfs') }, async t => {
  const dir = t.testdir()
  const tree = treeExpectations(writeRootfsTree(join(dir, 'tree')))
  const variants: Record<string, string[]> = {
    gzip: ['-comp', 'gzip'],
    xz: ['-comp', 'xz'],
    lz4: ['-comp', 'lz4', '-Xhc'],
    zstd: ['-comp', 'zstd', '-b', '1M'],
    uncompressed: ['-noI', '-noD', '-noF', '-noX'],
    'no-fragments': ['-no-fragments', '-b', '4K'],
    'always-fragments': ['-always-use-fragments', '-comp', 'xz'],
    'no-duplicates': ['-no-duplicates', '-comp', 'gzip']
  }
  for (const [name, args] of Object.entries(variants)) {
    const image = join(dir, `${name}.squashfs`)
    run('mksquashfs', [join(dir, 'tree'), image, '-noappend', '-no-progress', '-quiet', '-all-root', ...args])
    const fs = await openImage(image)
    await compareTree(t, fs, tree, `squashfs ${name}`)
    t.equal((await findNmstatectl(fs)).path, NMSTATECTL_PATH)
    await fs.close()
  }
  run('mksquashfs', [join(dir, 'tree'), join(dir, 'lzo.squashfs'), '-noappend', '-no-progress', '-quiet', '-comp', 'lzo'])
  await t.rejects(openImage(join(dir, 'lzo.squashfs')), /unsupported compressor lzo/)
})

t.test('our EROFS reader agrees with dump.erofs --cat', { skip: sharedSkip('erofs/bin') || missingTools('xz') }, async t => {
  const dir = t.testdir()
  const tool = join(dir, 'dump.erofs')
  run('sh', ['-c', `xz -dc '${SHARED_FIXTURES}erofs/bin/dump.erofs.xz' > '${tool}' && chmod +x '${tool}'`])
  const image = join(REPO_ROOTFS, 'tiny-fcos.erofs')
  const fs = await openImage(image)
  t.teardown(() => fs.close())
  for (const path of [NMSTATECTL_PATH, 'etc/ssh/sshd_config', NMSTATECTL_PATH.replace('bin/nmstatectl', 'lib/sparse.img')]) {
    const theirs = Buffer.from(run(tool, [`--path=/${path}`, '--cat', image]), 'latin1')
    t.ok((await readFile(fs, (await lookup(fs, path))!, 1 << 30)).equals(theirs), `${path}: same bytes as dump.erofs`)
  }
})

t.test('nmstatectl search: fallbacks, decoys and refusals', { skip: missingTools('mksquashfs') }, async t => {
  const dir = t.testdir({
    plain: { usr: { bin: { nmstatectl: '\x7fELF plain root' } } },
    nested: { var: { lib: { containers: { x: { usr: { bin: { nmstatectl: '\x7fELF nested' } } } } } }, ostree: { repo: { tmp: { usr: { bin: { nmstatectl: '\x7fELF repo object' } } } } } },
    decoys: { usr: { share: { 'bash-completion': { completions: { nmstatectl: 'complete -F _nmstatectl nmstatectl\n' } } }, bin: { nmstatectl: 'not an elf' } }, ostree: { repo: { tmp: { usr: { bin: { nmstatectl: '\x7fELF repo' } } } } } }
  })
  const image = (name: string): string => {
    run('mksquashfs', [join(dir, name), join(dir, `${name}.squashfs`), '-noappend', '-no-progress', '-quiet'])
    return join(dir, `${name}.squashfs`)
  }
  const plain = await openImage(image('plain'))
  t.equal((await findNmstatectl(plain)).path, 'usr/bin/nmstatectl', 'a plain root: /usr/bin/nmstatectl')
  await plain.close()
  const nested = await openImage(image('nested'))
  const found = await findNmstatectl(nested)
  t.equal(found.path, 'var/lib/containers/x/usr/bin/nmstatectl', 'any …/usr/bin/nmstatectl, never one in the ostree repo')
  t.equal(found.data.toString(), '\x7fELF nested')
  await nested.close()
  const decoys = await openImage(image('decoys'))
  await t.rejects(findNmstatectl(decoys), /no nmstatectl binary in the squashfs root filesystem; rejected: usr\/bin\/nmstatectl is not an ELF executable/)
  await decoys.close()
})

t.test('cpio wrapper: rootfs.img members other than the root filesystem are refused by name', async t => {
  const dir = t.testdir({ 'rootfs.img': `070701${'0'.repeat(8 * 11)}0000000B${'0'.repeat(8)}etc/passwd\0\0\0\0\0` })
  await t.rejects(openLiveRootfs(join(dir, 'rootfs.img'), 0, statSync(join(dir, 'rootfs.img')).size), /rootfs.img starts with "etc\/passwd"/)
})
