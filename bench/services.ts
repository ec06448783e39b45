// SPDX-License-Identifier: Apache-2.0
// The backend's services as a list, for the paths that map one listening port per service onto
// a backend target (stunnel's services, the HBONE client proxy's routes): the Node backend's
// echo and bulk source, and the B.1 tool servers when they run (nginx, sockperf server).
import type { ProbeMode } from './net.ts';
import type { BackendServices, Endpoint } from './types.ts';

export const SERVICE_NAMES = ['echo', 'source', 'http', 'sockperf'] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** How a path's readiness probe checks each service through the path (bench/net.ts). */
export const SERVICE_PROBE: Readonly<Record<ServiceName, ProbeMode>> = {
  echo: 'echo',
  source: 'source',
  http: 'http',
  sockperf: 'open',
};

export interface Service {
  readonly name: ServiceName;
  readonly target: Endpoint;
}

/** The services present in `b`, in SERVICE_NAMES order. */
export function serviceList(b: BackendServices): Service[] {
  return SERVICE_NAMES.flatMap((name) => {
    const target = b[name];
    return target === undefined ? [] : [{ name, target }];
  });
}

/** The inverse of serviceList: echo and source are required, the tool servers optional. */
export function servicesFrom(entries: Partial<Record<ServiceName, Endpoint>>): BackendServices {
  const { echo, source, http, sockperf } = entries;
  if (echo === undefined || source === undefined) throw new Error('a path must carry echo and source');
  return { echo, source, ...(http && { http }), ...(sockperf && { sockperf }) };
}
