// SPDX-License-Identifier: Apache-2.0
// The wire protocol between the CNI plugin and the node agent (spec ambient-protocols.md §2.1
// step 2): HTTP/1.1 over the Unix socket `<cni_agent_run_dir>/pluginevent.sock`, one JSON request
// per CNI call, `POST http://unix/cmdadd` (and /cmddel, /cmdcheck), answered 200 with a JSON body
// or 4xx/5xx with `{"error": "<message>"}`.
//
// The plugin and the agent ship in one image and the agent installs the very plugin binary it
// speaks to, so the body is our own (camelCase, the CNI result's address form "ip/prefix") rather
// than upstream's Go-encoded CNIPluginAddEvent (base64 masks); it carries the same facts plus the
// pod UID, container id and interface name. The agent validates it strictly: a plugin of another
// version is refused with a 400 that names the field, which fails ADD closed.
//
// This file has no runtime imports, so the plugin bundle (scripts/build-cni-plugin.ts) can carry it
// and the agent (cni-plugin/src/agent/plugin-events.ts) can share it.

/** Where the plugin finds the agent when the config does not say (`cni_agent_run_dir`). */
export const DEFAULT_CNI_AGENT_RUN_DIR = '/var/run/ambient-mesh';
/** The socket's file name inside the run directory. */
export const PLUGIN_EVENT_SOCKET_NAME = 'pluginevent.sock';

export const PLUGIN_EVENT_PATHS = {
  add: '/cmdadd',
  del: '/cmddel',
  check: '/cmdcheck',
} as const;

/** How long the plugin waits for the agent's answer to ADD or CHECK (spec §2.1: 5 s). */
export const AGENT_TIMEOUT_MS = 5_000;
/** DEL only informs the agent; it must not hold up pod deletion for long. */
export const AGENT_DEL_TIMEOUT_MS = 1_000;

/** Largest request body the agent reads and the largest answer the plugin reads. */
export const MAX_EVENT_BYTES = 64 * 1024;

/** One address of the pod, from the previous plugin's CNI result (`ips[]`). */
export interface PodIp {
  /** Address with prefix length, e.g. "198.18.0.5/24" or "fd00::5/64". */
  address: string;
  gateway?: string;
  /** Index into the CNI result's `interfaces`. */
  interface?: number;
}

/** Who the CNI call is about: the fields every event carries. */
export interface PodRef {
  podName: string;
  podNamespace: string;
  /** K8S_POD_UID, when the runtime passes it (containerd and CRI-O do). */
  podUid?: string;
  /** CNI_CONTAINERID: the sandbox. */
  containerId: string;
  /** CNI_IFNAME. */
  ifName: string;
}

/** Body of POST /cmdadd: a new pod sandbox whose network the primary plugin has set up. */
export interface PluginAddEvent extends PodRef {
  /** CNI_NETNS: the pod's network namespace, e.g. /var/run/netns/cni-1234. */
  netns: string;
  ips: PodIp[];
}

/** Body of POST /cmdcheck: the same facts as ADD, from the runtime's cached result. */
export type PluginCheckEvent = PluginAddEvent;

/** Body of POST /cmddel. CNI_NETNS may be gone (or empty) by the time of DEL. */
export interface PluginDelEvent extends PodRef {
  netns?: string;
}

/** 200 answer to /cmdadd. `enrolled: false` means the pod is not in the mesh; `reason` says why. */
export interface AddReply {
  enrolled: boolean;
  reason?: string;
}

/** 200 answer to /cmdcheck. `ok: false` fails CHECK with `reason`. */
export interface CheckReply {
  ok: boolean;
  reason?: string;
}

/** Body of every non-200 answer. */
export interface ErrorReply {
  error: string;
}
