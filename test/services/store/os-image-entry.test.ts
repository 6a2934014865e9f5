import t from 'tap'
import { compareOpenshiftVersions, deduplicateEntries, findEntry, isoFileName, type OsImageEntry } from '../../../services/store/os-image-entry.ts'

const e = (openshiftVersion: string, version: string, extra: Partial<OsImageEntry> = {}): OsImageEntry =>
  ({ openshiftVersion, version, cpuArchitecture: 'x86_64', url: 'https://m/x.iso', type: 'full-iso', ...extra })

t.test('openshift versions compare numerically, pre-releases below releases', async t => {
  t.ok(compareOpenshiftVersions('4.10', '4.9') > 0)
  t.ok(compareOpenshiftVersions('4.18.0-ec.0', '4.18.0') < 0)
  t.ok(compareOpenshiftVersions('4.18.0-ec.1', '4.18.0-ec.0') > 0)
  t.ok(compareOpenshiftVersions('4.18.0-ec.10', '4.18.0-ec.9') > 0)
  t.ok(compareOpenshiftVersions('4.18.0-rc.0', '4.18.0-ec.3') > 0)
  t.ok(compareOpenshiftVersions('4.18', '4.18.0-ec.0') > 0)
  t.equal(compareOpenshiftVersions('4.18', '4.18.0'), 0)
  t.ok(compareOpenshiftVersions('4.19.0-ec.0', '4.18.5') > 0)
})

t.test('deduplicate by version@arch@type keeping the highest openshift_version', async t => {
  const entries = [e('4.17', '417.1'), e('4.18.0-ec.2', '417.1'), e('4.16', '417.1'), e('4.17', '417.1', { type: 'disconnected-iso' }), e('4.17', '417.1', { cpuArchitecture: 'arm64' })]
  const groups = deduplicateEntries(entries)
  t.equal(groups.length, 3)
  t.equal(groups.find(g => g.type === 'full-iso' && g.cpuArchitecture === 'x86_64')?.openshiftVersion, '4.18.0-ec.2')
  t.equal(isoFileName(groups[0]!), 'rhcos-full-iso-417.1-x86_64.iso')
  t.equal(isoFileName(groups.find(g => g.type === 'disconnected-iso')!), 'rhcos-disconnected-iso-417.1-x86_64.iso')
})

t.test('lookup: RHCOS version first, then openshift_version, same arch, exact strings', async t => {
  const entries = [e('4.17', '417.94.1'), e('417.94.1', 'other'), e('4.18', '418.94.1'), e('4.18', '418.94.1', { cpuArchitecture: 's390x' })]
  t.equal(findEntry(entries, '417.94.1', 'x86_64')?.openshiftVersion, '4.17', 'the RHCOS version wins')
  t.equal(findEntry(entries, '4.18', 'x86_64')?.version, '418.94.1')
  t.equal(findEntry(entries, '4.18', 's390x')?.cpuArchitecture, 's390x')
  t.equal(findEntry(entries, '4.18.0', 'x86_64'), undefined, 'exact strings only')
  t.equal(findEntry(entries, '4.18', 'aarch64'), undefined)
})

t.test('architecture names are not normalised: an entry is found by the spelling it was configured with', async t => {
  const entries = [e('4.18', '418.94.1', { cpuArchitecture: 'arm64' }), e('4.18', '418.94.2', { cpuArchitecture: 'aarch64' })]
  t.equal(findEntry(entries, '4.18', 'arm64')?.version, '418.94.1')
  t.equal(findEntry(entries, '4.18', 'aarch64')?.version, '418.94.2', 'as upstream: arm64 and aarch64 are two entries')
  t.equal(findEntry([entries[0]!], '4.18', 'aarch64'), undefined, 'an arm64 entry does not answer for aarch64')
})
