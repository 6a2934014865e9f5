import t from 'tap'
import { rename } from 'node:fs/promises'
import { buildSyntheticIso } from '../../../services/coreos/synthetic-iso.ts'
import { build } from '../../helper.ts'

t.test('/health turns 200 when every image is ready; metrics follow', async t => {
  const dir = t.testdir({ iso: {}, envs: {} })
  const iso = await buildSyntheticIso({ dir: `${dir}/iso`, volumeId: 'rhcos-417.94.20' })
  const late = `${dir}/iso/late.iso`
  const osImages = [
    { openshift_version: '4.17', cpu_architecture: 'x86_64', url: `file://${iso}`, version: '417.94.20' },
    { openshift_version: '4.17', cpu_architecture: 'aarch64', url: `file://${late}`, version: '417.94.20' }
  ]
  const { app, logs } = await build(t, { OS_IMAGES: JSON.stringify(osImages), INFRAENVS_DIR: `${dir}/envs` }, { app: { imageStore: { timing: { retryBaseMs: 50, retryMaxMs: 100 } } } })
  await app.ready()
  await app.imageStore.settled()
  let res = await app.inject('/health')
  t.equal(res.statusCode, 503, 'one image missing: not ready')
  t.same(res.json().pending, ['417.94.20@aarch64@full-iso'])
  t.ok(app.readiness.isReady('417.94.20@x86_64@full-iso'), 'the other image is ready meanwhile')
  t.match((await app.inject('/metrics')).body, /assisted_image_service_os_images_ready 1/)
  t.match((await app.inject('/metrics')).body, /assisted_image_service_os_image_download_failures_total [1-9]/)
  t.match(logs.text, /OS image not ready, will retry/)

  // The missing file appears: the retry picks it up.
  await rename(iso, late)
  const copy = await buildSyntheticIso({ dir: `${dir}/iso`, volumeId: 'rhcos-417.94.20' })
  t.equal(copy, iso)
  for (let i = 0; i < 100 && (await app.inject('/health')).statusCode !== 200; i++) await new Promise(resolve => setTimeout(resolve, 50))
  res = await app.inject('/health')
  t.equal(res.statusCode, 200)
  t.match((await app.inject('/metrics')).body, /assisted_image_service_os_images_ready 2/)
})
