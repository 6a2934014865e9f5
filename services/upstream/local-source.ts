import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { IsoKind } from '../coreos/customize.ts'
import { InfraEnvNotFound, UpstreamBadAnswer } from '../errors.ts'
import { parseKernelArguments, type Credential, type IgnitionAnswer, type InfraEnvSource } from './infra-env-source.ts'

/**
 * InfraEnvs from files, for labs, demos and air-gapped use:
 * `{dir}/{image_id}/discovery.ign` (required), `minimal-initrd.img` and
 * `infra-env.json` (optional). Credentials are not checked.
 */
export class LocalInfraEnvSource implements InfraEnvSource {
  readonly dir: string

  constructor (dir: string) {
    this.dir = dir
  }

  #path (imageId: string, file: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(imageId)) throw new InfraEnvNotFound()
    return join(this.dir, imageId, file)
  }

  async #read (imageId: string, file: string): Promise<{ data: Buffer, mtime: Date } | undefined> {
    const path = this.#path(imageId, file)
    try {
      const [data, info] = await Promise.all([readFile(path), stat(path)])
      return { data, mtime: info.mtime }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  async ignition (imageId: string, _isoType: IsoKind | undefined, _credential: Credential | undefined): Promise<IgnitionAnswer> {
    const found = await this.#read(imageId, 'discovery.ign')
    if (found === undefined) throw new InfraEnvNotFound()
    return { data: found.data, lastModified: found.mtime }
  }

  async ramdisk (imageId: string): Promise<Buffer | undefined> {
    const found = await this.#read(imageId, 'minimal-initrd.img')
    return found === undefined || found.data.length === 0 ? undefined : found.data
  }

  async kernelArguments (imageId: string): Promise<string[]> {
    const found = await this.#read(imageId, 'infra-env.json')
    if (found === undefined) return []
    let infraEnv: { kernel_arguments?: unknown }
    try {
      infraEnv = JSON.parse(found.data.toString('utf8')) as typeof infraEnv
    } catch {
      throw new UpstreamBadAnswer(`infra-env.json of ${imageId} is not JSON`)
    }
    return parseKernelArguments(infraEnv.kernel_arguments)
  }
}
