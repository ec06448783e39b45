// SPDX-License-Identifier: Apache-2.0
// Strict parsing of one CNI invocation: the CNI_* environment and the network configuration on
// stdin (containernetworking/cni SPEC.md 1.0.0, "Parameters" and "Network configuration"), into
// what the commands need. Every rejection is a CniPluginError with the spec's code and a message
// naming the variable or key, its value, and what was expected.
//
// Our keys in the plugin's conflist entry (written by cni-plugin/src/install/):
//   cni_agent_run_dir   directory of the agent's socket pluginevent.sock (default /var/run/ambient-mesh)
//   exclude_namespaces  namespaces whose pods pass straight through, added to kube-system
//   log_level           trace, debug, info (default), warn, error, fatal or silent; logs go to stderr
// Unknown keys are refused (code 2), so a typo such as `exclude_namespace` cannot silently widen
// the mesh's blind spot; the runtime-provided keys of SPEC.md are accepted.
import { CNI_CODES, CniPluginError, isSupportedCniVersion, SUPPORTED_CNI_VERSIONS } from './cni.ts';
import type { CniVersion } from './cni.ts';
import {
  isAbsolutePath,
  isCidr,
  isContainerId,
  isIfName,
  isIpAddress,
  isNamespaceName,
  isPodName,
  isPodUid,
} from './fields.ts';
import { DEFAULT_CNI_AGENT_RUN_DIR, PLUGIN_EVENT_SOCKET_NAME } from './protocol.ts';
import type { PodIp } from './protocol.ts';

export const CNI_COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION'] as const;
export type CniCommand = (typeof CNI_COMMANDS)[number];

/** Pods in these namespaces are never enrolled, whatever the config says. */
export const ALWAYS_EXCLUDED_NAMESPACES: readonly string[] = ['kube-system'];

export const PLUGIN_LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type PluginLogLevel = (typeof PLUGIN_LOG_LEVELS)[number];

/** Keys the runtime itself may put in a plugin's configuration (SPEC.md "Network configuration"). */
const RUNTIME_KEYS = new Set([
  'cniVersion',
  'name',
  'type',
  'args',
  'runtimeConfig',
  'capabilities',
  'prevResult',
]);
const OUR_KEYS = new Set(['cni_agent_run_dir', 'exclude_namespaces', 'log_level']);

/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

const NETWORK_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** The previous plugin's result: passed through untouched; its addresses go to the agent. */
export interface PrevResult {
  /** Exactly as received (re-serialised with JSON.stringify, every field kept). */
  raw: Record<string, unknown>;
  ips: PodIp[];
}

/** Our plugin's configuration, from stdin. */
export interface PluginConfig {
  cniVersion: CniVersion;
  name: string;
  type: string;
  /** `<cni_agent_run_dir>/pluginevent.sock`. */
  agentSocket: string;
  excludeNamespaces: ReadonlySet<string>;
  logLevel: PluginLogLevel;
  prevResult: PrevResult | undefined;
}

/** K8S_POD_* from CNI_ARGS (set by kubelet's runtime for every pod sandbox). */
export interface K8sPod {
  namespace: string;
  name: string;
  uid?: string;
}

/** The CNI_* environment of ADD, DEL and CHECK. */
export interface CniEnv {
  containerId: string;
  /** Required for ADD and CHECK; DEL may come without it (the sandbox is gone). */
  netns: string | undefined;
  ifName: string;
  /** Undefined when CNI_ARGS names no pod: the sandbox is not a Kubernetes pod. */
  pod: K8sPod | undefined;
}

function invalidEnv(message: string, details?: string): CniPluginError {
  return new CniPluginError(CNI_CODES.invalidEnvironment, message, details);
}

function invalidConfig(message: string): CniPluginError {
  return new CniPluginError(CNI_CODES.invalidNetworkConfig, message);
}

function show(v: unknown): string {
  const s = JSON.stringify(v) as string | undefined;
  if (s === undefined) return String(v);
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** CNI_COMMAND. */
export function parseCommand(env: Readonly<Record<string, string | undefined>>): CniCommand {
  const cmd = env.CNI_COMMAND;
  if (cmd === undefined || cmd === '') throw invalidEnv('CNI_COMMAND is not set');
  if (!(CNI_COMMANDS as readonly string[]).includes(cmd)) {
    throw invalidEnv(`unknown CNI_COMMAND ${show(cmd)}`, `this plugin implements ${CNI_COMMANDS.join(', ')}`);
  }
  return cmd as CniCommand;
}

/**
 * CNI_ARGS: `KEY=VALUE` pairs separated by `;` (SPEC.md), refused when malformed rather than
 * half-read (as libcni does). Only the K8S_POD_* keys are used; one of those given twice is
 * ambiguous about which pod this is, so it is refused too.
 */
export function parseCniArgs(raw: string | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (raw === undefined || raw === '') return out;
  for (const pair of raw.split(';')) {
    const kv = pair.split('=');
    const [key, value] = kv;
    if (kv.length !== 2 || key === undefined || value === undefined || key === '') {
      throw invalidEnv(
        `CNI_ARGS has a malformed pair ${show(pair)}`,
        'expected KEY=VALUE pairs separated by ";"',
      );
    }
    if (key.startsWith('K8S_POD_') && out.has(key)) throw invalidEnv(`CNI_ARGS sets ${key} twice`);
    out.set(key, value);
  }
  return out;
}

function podFromArgs(args: Map<string, string>): K8sPod | undefined {
  const namespace = args.get('K8S_POD_NAMESPACE');
  const name = args.get('K8S_POD_NAME');
  const uid = args.get('K8S_POD_UID');
  if (namespace === undefined && name === undefined) return undefined;
  if (namespace === undefined || name === undefined) {
    const [has, lacks] =
      namespace === undefined ? ['K8S_POD_NAME', 'K8S_POD_NAMESPACE'] : ['K8S_POD_NAMESPACE', 'K8S_POD_NAME'];
    throw invalidEnv(`CNI_ARGS has ${has} but not ${lacks}`, 'a Kubernetes runtime passes both');
  }
  if (!isNamespaceName(namespace)) {
    throw invalidEnv(`CNI_ARGS K8S_POD_NAMESPACE=${show(namespace)} is not a valid namespace name`);
  }
  if (!isPodName(name)) {
    throw invalidEnv(`CNI_ARGS K8S_POD_NAME=${show(name)} is not a valid pod name`);
  }
  if (uid === undefined || uid === '') return { namespace, name };
  if (!isPodUid(uid)) throw invalidEnv(`CNI_ARGS K8S_POD_UID=${show(uid)} is not a valid UID`);
  return { namespace, name, uid };
}

/** The CNI_* variables ADD, DEL and CHECK need (SPEC.md "Parameters"). */
export function parseEnv(
  command: 'ADD' | 'CHECK',
  env: Readonly<Record<string, string | undefined>>,
): CniEnv & { netns: string };
export function parseEnv(command: 'DEL', env: Readonly<Record<string, string | undefined>>): CniEnv;
export function parseEnv(
  command: Exclude<CniCommand, 'VERSION'>,
  env: Readonly<Record<string, string | undefined>>,
): CniEnv {
  const containerId = env.CNI_CONTAINERID ?? '';
  if (containerId === '') throw invalidEnv('CNI_CONTAINERID is not set');
  if (!isContainerId(containerId)) {
    throw invalidEnv(
      `CNI_CONTAINERID=${show(containerId)} is invalid`,
      'it must start with a letter or digit, followed by letters, digits, "_", "." or "-"',
    );
  }
  const ifName = env.CNI_IFNAME ?? '';
  if (ifName === '') throw invalidEnv('CNI_IFNAME is not set');
  if (!isIfName(ifName)) {
    throw invalidEnv(`CNI_IFNAME=${show(ifName)} is not a valid interface name`);
  }
  const rawNetns = env.CNI_NETNS ?? '';
  let netns: string | undefined;
  if (rawNetns === '') {
    if (command !== 'DEL') {
      throw invalidEnv(`CNI_NETNS is not set; ${command} needs the pod's network namespace`);
    }
  } else if (!isAbsolutePath(rawNetns)) {
    throw invalidEnv(`CNI_NETNS=${show(rawNetns)} is not an absolute path`);
  } else {
    netns = rawNetns;
  }
  return { containerId, netns, ifName, pod: podFromArgs(parseCniArgs(env.CNI_ARGS)) };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseCidr(v: unknown, where: string): string {
  if (typeof v !== 'string' || !isCidr(v)) {
    throw invalidConfig(`${where} ${show(v)} is not an address with a prefix length (e.g. 198.18.0.5/24)`);
  }
  return v;
}

/** The parts of a CNI result we read (SPEC.md "Success"); everything else is kept untouched. */
export function parsePrevResult(v: unknown): PrevResult {
  if (!isRecord(v)) throw invalidConfig(`prevResult must be a CNI result object, got ${show(v)}`);
  const rawIps = v.ips ?? [];
  if (!Array.isArray(rawIps)) throw invalidConfig(`prevResult.ips must be a list, got ${show(rawIps)}`);
  const ips = rawIps.map((entry: unknown, i): PodIp => {
    const where = `prevResult.ips[${i}]`;
    if (!isRecord(entry)) throw invalidConfig(`${where} must be an object, got ${show(entry)}`);
    const ip: PodIp = { address: parseCidr(entry.address, `${where}.address`) };
    if (entry.gateway !== undefined) {
      if (typeof entry.gateway !== 'string' || !isIpAddress(entry.gateway)) {
        throw invalidConfig(`${where}.gateway ${show(entry.gateway)} is not an IP address`);
      }
      ip.gateway = entry.gateway;
    }
    if (entry.interface !== undefined) {
      if (
        typeof entry.interface !== 'number' ||
        !Number.isSafeInteger(entry.interface) ||
        entry.interface < 0
      ) {
        throw invalidConfig(`${where}.interface ${show(entry.interface)} is not an index into interfaces`);
      }
      ip.interface = entry.interface;
    }
    return ip;
  });
  return { raw: v, ips };
}

function parseRunDir(v: unknown): string {
  if (v === undefined) return DEFAULT_CNI_AGENT_RUN_DIR;
  if (typeof v !== 'string' || !isAbsolutePath(v)) {
    throw invalidConfig(`cni_agent_run_dir must be an absolute path, got ${show(v)}`);
  }
  return v;
}

function parseExcluded(v: unknown): Set<string> {
  const out = new Set(ALWAYS_EXCLUDED_NAMESPACES);
  if (v === undefined) return out;
  if (!Array.isArray(v))
    throw invalidConfig(`exclude_namespaces must be a list of namespace names, got ${show(v)}`);
  for (const [i, ns] of v.entries()) {
    if (typeof ns !== 'string' || !isNamespaceName(ns)) {
      throw invalidConfig(`exclude_namespaces[${i}] ${show(ns)} is not a namespace name`);
    }
    out.add(ns);
  }
  return out;
}

function parseLogLevel(v: unknown): PluginLogLevel {
  if (v === undefined) return 'info';
  if (typeof v !== 'string' || !(PLUGIN_LOG_LEVELS as readonly string[]).includes(v)) {
    throw invalidConfig(`log_level must be one of ${PLUGIN_LOG_LEVELS.join(', ')}, got ${show(v)}`);
  }
  return v as PluginLogLevel;
}

/** The network configuration on stdin (which commands need `prevResult` is theirs to say). */
export function parseNetConf(stdin: string): PluginConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(stdin);
  } catch (e) {
    throw new CniPluginError(
      CNI_CODES.decodingFailure,
      `the network configuration on stdin is not JSON: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  if (!isRecord(doc))
    throw invalidConfig(`the network configuration must be a JSON object, got ${show(doc)}`);
  const cniVersion = doc.cniVersion;
  if (typeof cniVersion !== 'string') {
    throw invalidConfig(`cniVersion must be a string such as "1.0.0", got ${show(cniVersion)}`);
  }
  if (!isSupportedCniVersion(cniVersion)) {
    throw new CniPluginError(
      CNI_CODES.incompatibleVersion,
      `incompatible CNI version: config is ${show(cniVersion)}, plugin supports ${SUPPORTED_CNI_VERSIONS.join(', ')}`,
    );
  }
  for (const key of Object.keys(doc)) {
    if (!RUNTIME_KEYS.has(key) && !OUR_KEYS.has(key)) {
      throw new CniPluginError(
        CNI_CODES.unsupportedField,
        `unsupported field ${show(key)}=${show(doc[key])} in the ambient CNI plugin's configuration`,
        `known fields: ${[...OUR_KEYS].join(', ')} (and the runtime's ${[...RUNTIME_KEYS].join(', ')})`,
      );
    }
  }
  const { name, type } = doc;
  if (typeof name !== 'string' || !NETWORK_NAME.test(name)) {
    throw invalidConfig(`name must be a network name (letters, digits, "_", ".", "-"), got ${show(name)}`);
  }
  if (typeof type !== 'string' || type === '')
    throw invalidConfig(`type must be the plugin's name, got ${show(type)}`);
  const runDir = parseRunDir(doc.cni_agent_run_dir);
  const agentSocket = `${runDir.replace(/\/+$/, '')}/${PLUGIN_EVENT_SOCKET_NAME}`;
  if (Buffer.byteLength(agentSocket) > MAX_SOCKET_PATH_BYTES) {
    throw invalidConfig(
      `cni_agent_run_dir ${show(runDir)} is too long: the socket path ${show(agentSocket)} must fit in ` +
        `${MAX_SOCKET_PATH_BYTES} bytes`,
    );
  }
  const prevResult = doc.prevResult === undefined ? undefined : parsePrevResult(doc.prevResult);
  return {
    cniVersion,
    name,
    type,
    agentSocket,
    excludeNamespaces: parseExcluded(doc.exclude_namespaces),
    logLevel: parseLogLevel(doc.log_level),
    prevResult,
  };
}
