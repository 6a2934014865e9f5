import { existsSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Config } from '../config.ts'
import { buildSyntheticIso } from './synthetic-iso.ts'
import { filesArchive } from './ignition-archive.ts'

const DEMO_IMAGE_ID = '6f7d5b1e-4a2c-4e8b-9d3f-0a1b2c3d4e5f'
export const DEMO_VERSION = '9.6.20250101-0'
const DEMO_OPENSHIFT_VERSION = '4.17'

/**
 * No OS_IMAGES and no ASSISTED_SERVICE_HOST: build a small synthetic CoreOS
 * ISO and a demo InfraEnv under DATA_DIR/demo and serve them, so a newcomer
 * sees the service work with no internet and no assisted-service.
 */
export async function prepareDemo (config: Config): Promise<Config> {
  const dir = join(config.dataDir, 'demo')
  const infraEnvs = join(dir, 'infraenvs')
  const hostDir = join(infraEnvs, DEMO_IMAGE_ID)
  await mkdir(hostDir, { recursive: true })
  const iso = join(dir, `rhcos-${DEMO_VERSION}-x86_64.iso`)
  if (!existsSync(iso)) await buildSyntheticIso({ dir, volumeId: `rhcos-${DEMO_VERSION}` })
  const ignition = {
    ignition: { version: '3.2.0' },
    storage: { files: [{ path: '/etc/motd', mode: 420, contents: { source: 'data:,Hello%20from%20assisted-image-service%0A' } }] }
  }
  await writeFile(join(hostDir, 'discovery.ign'), `${JSON.stringify(ignition, null, 2)}\n`)
  await writeFile(join(hostDir, 'infra-env.json'), `${JSON.stringify({ id: DEMO_IMAGE_ID, kernel_arguments: JSON.stringify([{ operation: 'append', value: 'console=ttyS0' }]) }, null, 2)}\n`)
  await writeFile(join(hostDir, 'minimal-initrd.img'), filesArchive([{ name: 'etc/assisted/demo-network.nmconnection', mode: 0o100600, data: Buffer.from('[connection]\nid=demo\ntype=ethernet\n') }]))
  return {
    ...config,
    osImages: [{ openshiftVersion: DEMO_OPENSHIFT_VERSION, cpuArchitecture: 'x86_64', url: pathToFileURL(iso).href, version: DEMO_VERSION, type: 'full-iso' }],
    infraEnvsDir: infraEnvs
  }
}

/** Copy-paste commands for the demo, against the port the service listens on. */
export function demoInstructions (baseUrl: string): string {
  const id = DEMO_IMAGE_ID
  return [
    '',
    'assisted-image-service demo: a synthetic CoreOS ISO and one InfraEnv, no internet needed.',
    '',
    `  curl -o full.iso     ${baseUrl}/byid/${id}/${DEMO_VERSION}/x86_64/full.iso`,
    `  curl -o minimal.iso  ${baseUrl}/byid/${id}/${DEMO_VERSION}/x86_64/minimal.iso`,
    `  curl -o initrd.img   "${baseUrl}/images/${id}/pxe-initrd?version=${DEMO_VERSION}&arch=x86_64"`,
    `  curl -o vmlinuz      "${baseUrl}/boot-artifacts/kernel?version=${DEMO_VERSION}&arch=x86_64"`,
    `  curl -I              ${baseUrl}/byid/${id}/${DEMO_VERSION}/x86_64/full.iso   # note the short Link header`,
    `  curl ${baseUrl}/health ; curl ${baseUrl}/metrics`,
    ''
  ].join('\n')
}
