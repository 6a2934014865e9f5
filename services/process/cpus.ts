import { readFileSync } from 'node:fs'
import os from 'node:os'

/**
 * The CPUs this process may use: the scheduler affinity, further capped by a
 * cgroup v2 CPU quota (a Kubernetes CPU limit), at least one.
 */
export function availableCpus (cpuMaxFile = '/sys/fs/cgroup/cpu.max'): number {
  let cpus = os.availableParallelism()
  try {
    const [quota, period] = readFileSync(cpuMaxFile, 'utf8').trim().split(/\s+/)
    if (quota !== undefined && quota !== 'max' && Number(period) > 0) cpus = Math.min(cpus, Math.ceil(Number(quota) / Number(period)))
  } catch { /* no cgroup v2 quota here */ }
  return Math.max(1, cpus)
}
