// SPDX-License-Identifier: Apache-2.0
// The ambient CNI plugin's commands (spec ambient-protocols.md §2.1 step 2; CNI SPEC.md 1.0.0).
//
//   VERSION  the versions we accept.
//   ADD      not a Kubernetes pod, or in an excluded namespace → the previous result, at once.
//            Otherwise the pod's netns must still exist, and the node agent — the one that knows
//            the pod's and namespace's labels, so the one that decides eligibility — is told
//            (POST /cmdadd, 5 s). Its 200 `{enrolled}` → the previous result, unchanged. Anything
//            else fails ADD with a CNI error saying why: the sandbox is not created, so a pod
//            that should be in the mesh never runs outside it (fail closed, checklist D.57/D.61).
//   CHECK    the previous result must be present and valid; the agent confirms the pod's
//            redirection is in place (POST /cmdcheck); an agent we cannot ask fails CHECK too.
//   DEL      always succeeds (CNI DEL must be idempotent and must not wedge pod deletion): the
//            agent is told on a best-effort basis and learns deletions from its own pod watch.
//
// stdout carries only the result or the CNI error object; logs go to the log destination
// (stderr) as JSON lines.
import type { Writable } from 'node:stream';
import { Logger } from '../../../src/shared/telemetry/logger.ts';
import type { AgentAnswer, AgentPoster } from './agent-client.ts';
import {
  CNI_CODES,
  CniPluginError,
  cniErrorObject,
  LATEST_CNI_VERSION,
  versionAnswer,
  versionHasCheck,
} from './cni.ts';
import { parseCommand, parseEnv, parseNetConf } from './config.ts';
import type { CniEnv, K8sPod, PluginConfig, PrevResult } from './config.ts';
import { AGENT_DEL_TIMEOUT_MS, AGENT_TIMEOUT_MS, PLUGIN_EVENT_PATHS } from './protocol.ts';
import type { AddReply, CheckReply, PluginAddEvent, PluginDelEvent } from './protocol.ts';

/** Larger network configurations are refused: ours plus a result is a few KiB. */
export const MAX_STDIN_BYTES = 1024 * 1024;

export interface PluginDeps {
  /** Talks to the agent (./agent-client.ts). */
  post: AgentPoster;
  /** Throws a CniPluginError unless the path is a network namespace (./netns.ts). */
  assertNetns: (path: string) => void;
  /** Where log lines go (stderr in the binary). */
  logDestination: Writable;
}

export interface PluginOutcome {
  /** Exactly what goes to stdout ('' for nothing). */
  stdout: string;
  exitCode: 0 | 1;
}

const ok = (stdout = ''): PluginOutcome => ({ stdout, exitCode: 0 });

/** Runs one CNI invocation; never rejects: every failure becomes a CNI error object. */
export async function runPlugin(
  env: Readonly<Record<string, string | undefined>>,
  stdin: string,
  deps: PluginDeps,
): Promise<PluginOutcome> {
  let cniVersion: string = LATEST_CNI_VERSION;
  let log = new Logger({ level: 'info', destination: deps.logDestination }).child({ scope: 'cni-plugin' });
  try {
    const command = parseCommand(env);
    if (command === 'VERSION') return ok(JSON.stringify(versionAnswer()));
    if (command === 'DEL') return await del(env, stdin, deps, log);
    if (Buffer.byteLength(stdin) > MAX_STDIN_BYTES) {
      throw new CniPluginError(
        CNI_CODES.decodingFailure,
        `the network configuration on stdin is larger than ${MAX_STDIN_BYTES} bytes`,
      );
    }
    const config = parseNetConf(stdin);
    cniVersion = config.cniVersion;
    const cniEnv = parseEnv(command, env);
    log = podLogger(deps, config, cniEnv, command);
    const prev = config.prevResult;
    if (prev === undefined) {
      throw new CniPluginError(
        CNI_CODES.invalidNetworkConfig,
        `no prevResult in ${command}: the ambient CNI plugin must be chained after the primary plugin in a conflist`,
      );
    }
    if (command === 'ADD') return await add(config, prev, cniEnv, deps, log);
    return await check(config, prev, cniEnv, deps, log);
  } catch (err) {
    const obj = cniErrorObject(err, cniVersion);
    log.error(
      { code: obj.code, details: obj.details, ...(obj.code === CNI_CODES.internal && { err }) },
      obj.msg,
    );
    return { stdout: JSON.stringify(obj), exitCode: 1 };
  }
}

function podLogger(deps: PluginDeps, config: PluginConfig, cniEnv: CniEnv, command: string): Logger {
  return new Logger({ level: config.logLevel, destination: deps.logDestination }).child({
    scope: 'cni-plugin',
    command,
    containerId: cniEnv.containerId,
    ...(cniEnv.pod !== undefined && { pod: `${cniEnv.pod.namespace}/${cniEnv.pod.name}` }),
  });
}

/** The pod the agent must be asked about, or why this sandbox is none of the mesh's business. */
function meshCandidate(config: PluginConfig, pod: K8sPod | undefined): { pod: K8sPod } | { skip: string } {
  if (pod === undefined)
    return { skip: 'not a Kubernetes pod (CNI_ARGS has no K8S_POD_NAMESPACE/K8S_POD_NAME)' };
  if (config.excludeNamespaces.has(pod.namespace)) return { skip: `namespace ${pod.namespace} is excluded` };
  return { pod };
}

function addEvent(prev: PrevResult, cniEnv: CniEnv, pod: K8sPod, netns: string): PluginAddEvent {
  return {
    netns,
    podName: pod.name,
    podNamespace: pod.namespace,
    ...(pod.uid !== undefined && { podUid: pod.uid }),
    containerId: cniEnv.containerId,
    ifName: cniEnv.ifName,
    ips: prev.ips,
  };
}

async function add(
  config: PluginConfig,
  prev: PrevResult,
  cniEnv: CniEnv & { netns: string },
  deps: PluginDeps,
  log: Logger,
): Promise<PluginOutcome> {
  const passThrough = ok(JSON.stringify(prev.raw));
  const target = meshCandidate(config, cniEnv.pod);
  if ('skip' in target) {
    log.debug(`passing through: ${target.skip}`);
    return passThrough;
  }
  deps.assertNetns(cniEnv.netns);
  const event = addEvent(prev, cniEnv, target.pod, cniEnv.netns);
  const answer = await deps.post(config.agentSocket, PLUGIN_EVENT_PATHS.add, event, AGENT_TIMEOUT_MS);
  const reply = readReply(
    answer,
    config,
    PLUGIN_EVENT_PATHS.add,
    target.pod,
    isAddReply,
    '{"enrolled": boolean}',
  );
  log.info(
    { enrolled: reply.enrolled, ...(reply.reason !== undefined && { reason: reply.reason }) },
    reply.enrolled ? 'pod enrolled in the mesh' : 'pod not in the mesh',
  );
  return passThrough;
}

async function check(
  config: PluginConfig,
  prev: PrevResult,
  cniEnv: CniEnv & { netns: string },
  deps: PluginDeps,
  log: Logger,
): Promise<PluginOutcome> {
  if (!versionHasCheck(config.cniVersion)) {
    throw new CniPluginError(
      CNI_CODES.incompatibleVersion,
      `CHECK is not defined for cniVersion ${config.cniVersion} (it exists from 0.4.0 on)`,
    );
  }
  const target = meshCandidate(config, cniEnv.pod);
  if ('skip' in target) {
    log.debug(`nothing to check: ${target.skip}`);
    return ok();
  }
  deps.assertNetns(cniEnv.netns);
  const event = addEvent(prev, cniEnv, target.pod, cniEnv.netns);
  const answer = await deps.post(config.agentSocket, PLUGIN_EVENT_PATHS.check, event, AGENT_TIMEOUT_MS);
  const reply = readReply(
    answer,
    config,
    PLUGIN_EVENT_PATHS.check,
    target.pod,
    isCheckReply,
    '{"ok": boolean}',
  );
  if (!reply.ok) {
    throw new CniPluginError(
      CNI_CODES.checkFailed,
      `the node agent reports pod ${target.pod.namespace}/${target.pod.name} is not set up as expected: ` +
        (reply.reason ?? 'no reason given'),
    );
  }
  log.debug('agent confirmed the pod');
  return ok();
}

async function del(
  env: Readonly<Record<string, string | undefined>>,
  stdin: string,
  deps: PluginDeps,
  log: Logger,
): Promise<PluginOutcome> {
  let config: PluginConfig;
  let cniEnv: CniEnv;
  try {
    config = parseNetConf(stdin);
    cniEnv = parseEnv('DEL', env);
  } catch (err) {
    // Nothing of ours needs releasing on DEL; failing it would only keep the pod from going away.
    log.warn({ err }, 'DEL with an unusable configuration or environment: nothing to do');
    return ok();
  }
  const podLog = podLogger(deps, config, cniEnv, 'DEL');
  const target = meshCandidate(config, cniEnv.pod);
  if ('skip' in target) {
    podLog.debug(`nothing to tell the agent: ${target.skip}`);
    return ok();
  }
  const pod = target.pod;
  const event: PluginDelEvent = {
    podName: pod.name,
    podNamespace: pod.namespace,
    ...(pod.uid !== undefined && { podUid: pod.uid }),
    containerId: cniEnv.containerId,
    ifName: cniEnv.ifName,
    ...(cniEnv.netns !== undefined && { netns: cniEnv.netns }),
  };
  try {
    const answer = await deps.post(config.agentSocket, PLUGIN_EVENT_PATHS.del, event, AGENT_DEL_TIMEOUT_MS);
    if (answer.status !== 200) {
      podLog.warn({ status: answer.status, answer: answer.body.slice(0, 500) }, 'agent did not accept DEL');
    }
  } catch (err) {
    podLog.info({ err }, 'agent not told of DEL; it learns of the deletion from its pod watch');
  }
  return ok();
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isAddReply(v: unknown): v is AddReply {
  return (
    isRecord(v) && typeof v.enrolled === 'boolean' && (v.reason === undefined || typeof v.reason === 'string')
  );
}

function isCheckReply(v: unknown): v is CheckReply {
  return isRecord(v) && typeof v.ok === 'boolean' && (v.reason === undefined || typeof v.reason === 'string');
}

/** The agent's error text from a non-200 answer: `{"error": "..."}` or, failing that, the raw body. */
function agentMessage(answer: AgentAnswer): string {
  try {
    const doc: unknown = JSON.parse(answer.body);
    if (isRecord(doc) && typeof doc.error === 'string' && doc.error !== '') return doc.error;
  } catch {
    // not JSON: use the text
  }
  const text = answer.body.trim();
  return text === '' ? `HTTP ${answer.status} with an empty body` : text.slice(0, 500);
}

/** A 200 answer of the expected shape, or the CNI error that the answer amounts to. */
function readReply<T>(
  answer: AgentAnswer,
  config: PluginConfig,
  path: string,
  pod: K8sPod,
  valid: (v: unknown) => v is T,
  shape: string,
): T {
  const who = `pod ${pod.namespace}/${pod.name}`;
  const where = `the node agent at ${config.agentSocket}`;
  if (answer.status === 200) {
    let doc: unknown;
    try {
      doc = JSON.parse(answer.body);
    } catch {
      doc = undefined;
    }
    if (valid(doc)) return doc;
    throw new CniPluginError(
      CNI_CODES.agentBadReply,
      `${where} answered POST ${path} for ${who} with 200 but not ${shape}: ${answer.body.slice(0, 200)}`,
      'the plugin binary and the node agent are probably from different releases; reinstall the agent',
    );
  }
  const msg = agentMessage(answer);
  const notStarted =
    'the pod sandbox is not created, so the pod does not run outside the mesh; the runtime retries';
  if (answer.status === 503) {
    throw new CniPluginError(CNI_CODES.tryAgainLater, `${where} is not ready for ${who}: ${msg}`, notStarted);
  }
  if (answer.status >= 400 && answer.status < 500) {
    throw new CniPluginError(
      CNI_CODES.agentRejected,
      `${where} refused POST ${path} for ${who} (HTTP ${answer.status}): ${msg}`,
      `${notStarted}; a refusal usually means the plugin binary and the agent are from different releases`,
    );
  }
  throw new CniPluginError(
    CNI_CODES.agentFailed,
    `${where} failed to handle ${who} (HTTP ${answer.status}): ${msg}`,
    notStarted,
  );
}
