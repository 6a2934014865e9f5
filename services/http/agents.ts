import { readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { getCACertificates } from 'node:tls'

export interface OutboundOptions {
  /** Extra PEM CA, trusted in addition to the default roots (the system store's too with NODE_USE_SYSTEM_CA=1). */
  caFile?: string
  insecureSkipVerify?: boolean
  proxy?: { http?: string, https?: string, noProxy?: string }
}

/** Keep-alive agents for calls we make: proxies through Node's built-in proxy support, an extra CA on top of the roots. */
export function outboundAgents (options: OutboundOptions): { http: http.Agent, https: https.Agent } {
  const proxyEnv = {
    ...(options.proxy?.http !== undefined ? { HTTP_PROXY: options.proxy.http } : {}),
    ...(options.proxy?.https !== undefined ? { HTTPS_PROXY: options.proxy.https } : {}),
    ...(options.proxy?.noProxy !== undefined ? { NO_PROXY: options.proxy.noProxy } : {})
  }
  const ca = options.caFile !== undefined ? [...getCACertificates('default'), readFileSync(options.caFile, 'utf8')] : undefined
  return {
    http: new http.Agent({ keepAlive: true, proxyEnv }),
    https: new https.Agent({ keepAlive: true, proxyEnv, ...(ca !== undefined ? { ca } : {}), rejectUnauthorized: options.insecureSkipVerify !== true })
  }
}
