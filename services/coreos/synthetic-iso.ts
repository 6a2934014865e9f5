import { closeSync, ftruncateSync, openSync, statSync, writeSync } from 'node:fs'
import { join } from 'node:path'
import { ComposedImage } from '../compose/composed-image.ts'
import { ImageWriter } from '../compose/image-writer.ts'
import { MODE, writeNewc } from '../cpio/newc.ts'
import { planIso, type IsoNode } from '../iso9660/writer.ts'
import { PLATFORM } from '../iso9660/el-torito.ts'
import { writeAtomically } from '../io/atomic-write.ts'
import { EROFS_MAGIC, hasMagic } from '../rootfs/magic.ts'

const KARG_MARKER_HASHES = 1024

export interface SyntheticIsoOptions {
  /** Folder for the payload files and the ISO. */
  dir: string
  volumeId: string
  arch?: string
  rootfsSize?: number
  /** Use this rootfs.img instead of a sparse placeholder. */
  rootfsFile?: string
  kernelSize?: number
  /** 17-byte ISO 9660 date stamped on everything (the writer never reads the clock). */
  created?: Buffer
}

/** Python json.dump(indent=2, sort_keys=True) + "\n", as the CoreOS builders write JSON. */
export function builderJson (value: unknown): string {
  const sort = (v: unknown): unknown => Array.isArray(v)
    ? v.map(sort)
    : v !== null && typeof v === 'object'
      ? Object.fromEntries(Object.keys(v).sort().map(k => [k, sort((v as Record<string, unknown>)[k])]))
      : v
  return `${JSON.stringify(sort(value), null, 2)}\n`
}

/**
 * A sparse rootfs.img laid out like the builders': a newc header, then the root
 * filesystem at byte 124 (a real squashfs/EROFS image when given, else only a
 * squashfs magic), zeros up to `size`.
 */
export function writeSparseRootfs (path: string, size: number, filesystem?: Buffer): void {
  // rootfs.img is a newc cpio whose first member is the root filesystem; both names give a 124-byte header.
  const isErofs = filesystem !== undefined && hasMagic(filesystem, EROFS_MAGIC)
  const name = isErofs ? 'root.erofs\0' : 'root.squashfs\0'
  const fields = [0, MODE.file | 0o644, 0, 0, 1, 0, size - 124, 0, 0, 0, 0, name.length, 0]
  const header = `070701${fields.map(n => n.toString(16).padStart(8, '0')).join('')}`
  const fd = openSync(path, 'w')
  try {
    writeSync(fd, Buffer.from(header + name, 'latin1'))
    const body = filesystem ?? Buffer.from('hsqs')
    writeSync(fd, body, 0, body.length, 124)
    ftruncateSync(fd, size)
  } finally {
    closeSync(fd)
  }
}

function sparseFile (path: string, size: number, head: Buffer): void {
  const fd = openSync(path, 'w')
  try {
    writeSync(fd, head)
    ftruncateSync(fd, size)
  } finally {
    closeSync(fd)
  }
}

/**
 * Builds a small CoreOS-layout live ISO with our own writer: grub.cfg and
 * isolinux.cfg with kargs embed areas, igninfo.json and kargs.json, a 256 KiB
 * Ignition area, and sparse placeholder kernel/initrd/rootfs that pass the
 * store's checks. Used for the demo and for tests; it boots nothing.
 */
export async function buildSyntheticIso (options: SyntheticIsoOptions): Promise<string> {
  const { dir, volumeId } = options
  const created = options.created ?? Buffer.from('2025010100000000\0', 'latin1')
  const kargsDefault = `rw coreos.liveiso=${volumeId} ignition.firstboot ignition.platform.id=metal`
  const hashes = `${'#'.repeat(KARG_MARKER_HASHES)} COREOS_KARG_EMBED_AREA`
  const grubHead = 'set timeout=5\nmenuentry \'RHEL CoreOS (Live)\' --class fedora --class gnu-linux --class gnu --class os {\n\tlinux /images/pxeboot/vmlinuz '
  const grub = `${grubHead}${kargsDefault}\n${hashes}\n\tinitrd /images/pxeboot/initrd.img /images/ignition.img\n}\n`
  const isolinuxHead = 'serial 0\ndefault linux\ntimeout 50\nlabel linux\n  menu label ^RHEL CoreOS (Live)\n  kernel /images/pxeboot/vmlinuz\n  append initrd=/images/pxeboot/initrd.img,/images/ignition.img '
  const isolinux = `${isolinuxHead}${kargsDefault}\n${hashes}\nmenu end\n`
  const kargsJson = builderJson({
    default: kargsDefault,
    files: [
      { end: '\n', offset: grubHead.length, pad: '#', path: 'EFI/redhat/grub.cfg' },
      { end: '\n', offset: isolinuxHead.length, pad: '#', path: 'isolinux/isolinux.cfg' }
    ],
    size: kargsDefault.length + KARG_MARKER_HASHES
  })
  const rootfs = options.rootfsFile ?? join(dir, 'rootfs.img')
  const kernel = join(dir, 'vmlinuz')
  const rootfsSize = options.rootfsFile !== undefined ? statSync(options.rootfsFile).size : options.rootfsSize ?? 100 << 20
  if (options.rootfsFile === undefined) writeSparseRootfs(rootfs, rootfsSize)
  sparseFile(kernel, options.kernelSize ?? 5 << 20, Buffer.from('MZ synthetic kernel placeholder\n'))
  const initrd = writeNewc([{ name: 'etc/coreos-live-initramfs', mode: MODE.file | 0o644, data: Buffer.from(`${volumeId}\n`) }])
  const text = (data: string): IsoNode['content'] => ({ kind: 'buffer', data: Buffer.from(data) })
  const file = (name: string, content: IsoNode['content']): IsoNode => ({ name, content, mode: 0o100444 })
  const dirNode = (name: string, children: IsoNode[]): IsoNode => ({ name, children, mode: 0o40555 })
  const root: IsoNode = dirNode('', [
    dirNode('EFI', [dirNode('redhat', [file('grub.cfg', text(grub))])]),
    dirNode('coreos', [
      file('igninfo.json', text(builderJson({ file: 'images/ignition.img' }))),
      file('kargs.json', text(kargsJson)),
      file('features.json', text(builderJson({ 'installer-config': true, 'live-initrd-network': true })))
    ]),
    dirNode('images', [
      file('efiboot.img', { kind: 'zero', length: 64 * 1024 }),
      file('ignition.img', { kind: 'zero', length: 256 * 1024 }),
      dirNode('pxeboot', [
        file('vmlinuz', { kind: 'file', path: kernel, offset: 0, length: options.kernelSize ?? 5 << 20 }),
        file('initrd.img', { kind: 'buffer', data: initrd }),
        file('rootfs.img', { kind: 'file', path: rootfs, offset: 0, length: rootfsSize })
      ])
    ]),
    dirNode('isolinux', [file('isolinux.cfg', text(isolinux))])
  ])
  const plan = await planIso(root, {
    volume: { systemId: 'LINUX', volumeId, volumeSetId: volumeId, created },
    rockRidge: true,
    joliet: true,
    boot: { catalogPath: '/isolinux/boot.cat', entries: [{ path: '/images/efiboot.img', platform: PLATFORM.efi, loadSectors: 'image' }] },
    readContent: async () => Buffer.alloc(0)
  })
  const image = await ComposedImage.fromSegments(plan.segments)
  const path = join(dir, `${volumeId}-${options.arch ?? 'x86_64'}.iso`)
  try {
    await writeAtomically(path, async temp => { await new ImageWriter().saveSparse(image, temp) })
  } finally {
    await image.pool.close()
  }
  return path
}
