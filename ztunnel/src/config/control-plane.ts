// SPDX-License-Identifier: Apache-2.0
// How ztunnel reaches its control plane, shared by the WDS client (../xds/config.ts) and the CA
// client (../identity/ca-client.ts), from upstream's environment variables. Parsed once at
// start-up (./env.ts); no gRPC here (nor in ../xds/config.ts), so static mode does not load
// grpc-js (decision 11).
//
//   XDS_ADDRESS, CA_ADDRESS   `host:port` or `https://host:port` (TLS), or `http://host:port`:
//                    plaintext, to a loopback address only (the bearer token would otherwise
//                    cross the network in clear). CA_ADDRESS defaults to XDS_ADDRESS.
//   XDS_ROOT_CA      PEM roots the control plane's certificate must chain to (default
//                    /var/run/secrets/istio/root-cert.pem), re-read on every connect so that a
//                    rotated root is picked up (spec §4); `SYSTEM` = the system roots.
//   ALT_XDS_HOSTNAME name to verify in the control plane's certificate instead of the address's host.
//   AUTH_TOKEN       bearer token: an absolute path to a file, re-read on every use so a rotated
//                    projected token is picked up (default /var/run/secrets/tokens/istio-token),
//                    or the token itself. A literal token lives only inside the reader's
//                    closure: it is never a property of the configuration, so no dump or log of
//                    the configuration can show it.
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { errorMessage } from '../../../src/shared/errors.ts';
import { pemCertificatesToDer } from '../../../src/shared/identity/pem.ts';
import { ConfigError } from './errors.ts';

export const DEFAULT_XDS_ROOT_CA = '/var/run/secrets/istio/root-cert.pem';
export const DEFAULT_AUTH_TOKEN = '/var/run/secrets/tokens/istio-token';
/** XDS_ROOT_CA value meaning "the system's trusted roots". */
export const SYSTEM_ROOTS = 'SYSTEM';

type Env = Readonly<Record<string, string | undefined>>;

/** A bearer token source (AUTH_TOKEN). Shows where the token comes from, never the token. */
export interface BearerToken {
  /** The file the token is read from, or `(literal)`. */
  readonly source: string;
  /** The token; a file is read again on every call. Rejects with ConfigError when unusable. */
  read(): Promise<string>;
}

export interface ControlPlaneTls {
  /** PEM roots file (XDS_ROOT_CA), or SYSTEM_ROOTS. */
  readonly rootCa: string;
  /** ALT_XDS_HOSTNAME: the name verified in the certificate; default the address's host. */
  readonly serverName: string | undefined;
}

/** One control-plane endpoint (WDS or CA) as grpc-js dials it. */
export interface ControlPlaneEndpoint {
  /** `host:port`. */
  readonly address: string;
  /** TLS settings; undefined for plaintext (`http://` to a loopback address only). */
  readonly tls: ControlPlaneTls | undefined;
}

/** The settings every control-plane connection shares. */
export interface ControlPlaneSettings {
  readonly tls: ControlPlaneTls;
  readonly token: BearerToken;
}

function opt(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v === '' ? undefined : v;
}

function invalid(name: string, value: string, why: string): ConfigError {
  return new ConfigError('ZT_ERR_CONFIG', `invalid env var ${name}=${value} (${why})`);
}

/**
 * The token reader for AUTH_TOKEN's value: an absolute path is a file read on every call, any
 * other text is the token itself (held by the closure only).
 */
export function bearerToken(spec: string): BearerToken {
  if (!spec.startsWith('/')) {
    return Object.freeze({
      source: '(literal)',
      read: () =>
        spec === ''
          ? Promise.reject(new ConfigError('ZT_ERR_CONFIG', 'the literal token (AUTH_TOKEN) is empty'))
          : Promise.resolve(spec),
    });
  }
  const path = spec;
  return Object.freeze({
    source: path,
    read: async () => {
      let text: string;
      try {
        text = await readFile(path, 'utf8');
      } catch (err) {
        throw new ConfigError(
          'ZT_ERR_CONFIG',
          `cannot read the token file ${path} (AUTH_TOKEN): ${errorMessage(err)}; check that the projected ServiceAccount token volume (audience istio-ca) is mounted`,
          { cause: err },
        );
      }
      const token = text.trim();
      if (token === '')
        throw new ConfigError('ZT_ERR_CONFIG', `the token file ${path} (AUTH_TOKEN) is empty`);
      return token;
    },
  });
}

/** XDS_ROOT_CA, ALT_XDS_HOSTNAME and AUTH_TOKEN, parsed once for every control-plane connection. */
export function loadControlPlaneSettings(env: Env): ControlPlaneSettings {
  return Object.freeze({
    tls: Object.freeze({
      rootCa: opt(env, 'XDS_ROOT_CA') ?? DEFAULT_XDS_ROOT_CA,
      serverName: opt(env, 'ALT_XDS_HOSTNAME'),
    }),
    token: bearerToken(opt(env, 'AUTH_TOKEN') ?? DEFAULT_AUTH_TOKEN),
  });
}

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}

/** Whether `host:port` (IPv6 in brackets) names a loopback address. */
export function isLoopbackHostPort(hostPort: string): boolean {
  const host = /^(?:\[([^\]]+)\]|([^:]+)):[0-9]+$/.exec(hostPort);
  return host !== null && isLoopback(host[1] ?? host[2] ?? '');
}

/**
 * An address variable (XDS_ADDRESS, CA_ADDRESS): `host:port` and `https://host:port` are TLS with
 * `tls`; `http://host:port` is plaintext and allowed only to a loopback address. Throws ConfigError.
 */
export function parseControlPlaneAddress(
  name: string,
  raw: string,
  tls: ControlPlaneTls,
): ControlPlaneEndpoint {
  const scheme = /^(https?):\/\//.exec(raw)?.[1];
  const hostPort = scheme === undefined ? raw : raw.slice(scheme.length + 3);
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$/.exec(hostPort);
  const port = Number(m?.[2]);
  if (m === null || port < 1 || port > 65535) {
    throw invalid(
      name,
      raw,
      'expected host:port, https://host:port or http://host:port, e.g. istiod.istio-system.svc:15012',
    );
  }
  const host = (m[1] ?? '').replace(/^\[(.*)\]$/, '$1');
  if (scheme !== 'http') return Object.freeze({ address: hostPort, tls });
  if (!isLoopback(host)) {
    throw invalid(name, raw, 'plaintext http:// is allowed only to a loopback address; use https:// (TLS)');
  }
  return Object.freeze({ address: hostPort, tls: undefined });
}

/**
 * The trusted roots as PEM, read from the file now (so a rotated root is used by the next
 * connection), or null for SYSTEM_ROOTS. Throws ConfigError when the file is unreadable or holds
 * no certificate.
 */
export async function readRootCa(tls: ControlPlaneTls): Promise<Buffer | null> {
  if (tls.rootCa === SYSTEM_ROOTS) return null;
  let pem: Buffer;
  try {
    pem = await readFile(tls.rootCa);
    pemCertificatesToDer(pem.toString('utf8'), `XDS_ROOT_CA ${tls.rootCa}`);
  } catch (err) {
    throw new ConfigError(
      'ZT_ERR_CONFIG',
      `cannot read XDS_ROOT_CA ${tls.rootCa}: ${errorMessage(err)}; mount the mesh root certificate or set XDS_ROOT_CA=SYSTEM`,
      { cause: err },
    );
  }
  return pem;
}
