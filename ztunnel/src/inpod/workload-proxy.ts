// SPDX-License-Identifier: Apache-2.0
// One pod's proxy (spec §2.7): listeners 15001 (outbound), 15006 (inbound plaintext) and 15008
// (inbound HBONE) opened inside the pod's network namespace through its SocketFactory, an HBONE
// client pool of its own (tunnels are never shared across pods, spec §1.5) and the pod's
// certificate. Listeners use SO_REUSEPORT so a new ztunnel can take over during a handoff.
//
// The proxy is up as soon as its listeners are bound: the certificate is fetched in the
// background (a Warmup prefetch), as upstream does ("ztunnel accepts connections immediately but
// does not forward until the cert and workload info are present"). A connection that needs the
// certificate before it has arrived waits for it — an outbound connection routed over HBONE
// before its CONNECT, an inbound HBONE connection before its TLS handshake — for up to
// `certificateWaitMs`, and raises the fetch to RealTime priority meanwhile; if the fetch fails or
// the wait runs out, the connection is reset. Nothing is ever sent without mTLS instead.
//
// Identity. The pod's identity comes from the ZDS WorkloadInfo the node agent sent with Add
// (namespace and service account), so its certificate is fetched from the moment the proxy
// starts, not from when WDS describes the pod. The pod's own WDS workload is the one matching
// (name, namespace, service account, node), as upstream matches it; a WDS entry of the same name
// with another service account (stale: a deleted pod of that name, or the controller away) is
// not the pod's, and its service account is never taken.
//
// The pod's own WDS workload. Outbound routing takes the source workload (spec §1.6), and WDS
// learns of a new pod only after its CNI ADD (the pod IP is reported after the sandbox exists),
// ~200 ms later on an idle node. Until then, while WDS has no workload of this pod's name at all on
// this node, an outbound connection does not wait for it when the destination is one WDS already
// knows as a mesh workload reached directly over HBONE (no waypoint, no locality preference): the
// source is then taken from ZDS (namespace, service account, this node; no workload name or
// labels, so its metrics say `unknown` for those). Every other case waits for the pod's own
// workload as before, up to workloadWaitMs, and is reset without it (decision 6), including a
// WDS entry of this name that disagrees with ZDS: a destination WDS does not know (passthrough) may be a mesh pod that
// a store still filling up after a restart has not heard of yet (istio#42610). Inbound needs the
// pod's own workload for its checks and policies, and waits for it as before.
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { HboneClient } from '../../../src/shared/hbone/client.ts';
import { HboneServer } from '../../../src/shared/hbone/server.ts';
import { HboneError } from '../../../src/shared/hbone/errors.ts';
import { errorMessage } from '../../../src/shared/errors.ts';
import type { WorkloadCertificate } from '../../../src/shared/identity/cert-manager.ts';
import { PORTS } from '../ports.ts';
import { canonicalIp } from '../../../src/shared/net/ip.ts';
import { newWorkload, type Workload } from '../state/types.ts';
import type { PodInfo, ProxyContext } from '../proxy/context.ts';
import { handleOutbound } from '../proxy/outbound.ts';
import { routeOutbound } from '../proxy/route.ts';
import { InboundHandler } from '../proxy/inbound.ts';
import { handleInboundPlaintext } from '../proxy/inbound-passthrough.ts';
import type { SocketFactory } from './socket-factory.ts';
import { MeshError } from '../../../src/shared/errors.ts';

export interface WorkloadProxyPorts {
  readonly outbound: number;
  readonly inboundPlaintext: number;
  readonly hbone: number;
  /** Address the listeners bind to inside the pod netns (wildcard by default). */
  readonly host: string;
}

export const DEFAULT_PROXY_PORTS: WorkloadProxyPorts = {
  outbound: PORTS.outbound,
  inboundPlaintext: PORTS.inboundPlaintext,
  hbone: PORTS.hbone,
  host: '0.0.0.0',
};

/** The SPIFFE identity of a pod: its certificate's (spec §4). */
export function podIdentity(trustDomain: string, pod: Pick<PodInfo, 'namespace' | 'serviceAccount'>): string {
  return `spiffe://${trustDomain}/ns/${pod.namespace}/sa/${pod.serviceAccount}`;
}

export class WorkloadProxy {
  /** The ZDS WorkloadInfo the proxy was started with. */
  readonly pod: PodInfo;
  /** The pod's SPIFFE identity (its certificate), from ZDS. */
  readonly identity: string;
  readonly #ctx: ProxyContext;
  readonly #sockets: SocketFactory;
  readonly #ports: WorkloadProxyPorts;
  readonly #open = new Set<Duplex>();
  /** Inbound HBONE sockets accepted but waiting for the certificate before their handshake. */
  readonly #awaitingCert = new Set<net.Socket>();
  readonly #listeners: net.Server[] = [];
  #client: HboneClient | undefined;
  #server: HboneServer | undefined;
  #local: Workload | undefined;
  #localValid = false;
  #stopped = false;
  readonly #onStoreChange = (): void => {
    this.#localValid = false;
    // Sessions to addresses no workload holds any more are not handed out again (HboneClient.retire).
    const { store, network } = this.#ctx;
    this.#client?.retire((host) => store.workloadByIp(network, host) !== undefined);
  };
  /** New CRLs: the sessions of peers they revoke are torn down, in both directions (B.31). */
  readonly #onRevocationsChange = (): void => {
    const closed = [...(this.#client?.revalidate() ?? []), ...(this.#server?.revalidate() ?? [])];
    for (const c of closed) {
      this.#ctx.logger.warn(
        {
          scope: 'crl',
          pod: `${this.pod.namespace}/${this.pod.name}`,
          peer: c.peer.id.uri,
          remote: c.remote,
          tunnels: c.streams,
          err: c.error.message,
        },
        'closed the HBONE session of a revoked peer',
      );
    }
  };

  constructor(
    ctx: ProxyContext,
    pod: PodInfo,
    sockets: SocketFactory,
    ports: WorkloadProxyPorts = DEFAULT_PROXY_PORTS,
  ) {
    this.#ctx = ctx;
    this.pod = pod;
    this.#sockets = sockets;
    this.#ports = ports;
    this.identity = podIdentity(ctx.trustDomain, pod);
  }

  /** Live proxied connections (both directions), for /config_dump and drain. */
  get connections(): number {
    return this.#open.size;
  }

  /**
   * Starts fetching the pod's certificate in the background and opens the three listeners.
   * Throws (and leaves nothing open) when a listener cannot be opened or the pod's identity is
   * not a valid SPIFFE ID; the caller keeps the pod pending and retries (spec §2.6 step 5).
   */
  async start(): Promise<void> {
    const ctx = this.#ctx;
    ctx.store.on('changed', this.#onStoreChange);
    ctx.revocations.on('changed', this.#onRevocationsChange);
    ctx.certs.prefetch(this.identity);
    // The current certificate, never an expired one: what each new TLS session presents.
    const certificate = (): WorkloadCertificate => {
      const c = ctx.certs.current(this.identity);
      if (c === undefined) throw new MeshError('ZT_ERR_CERTIFICATE', `no certificate for ${this.identity}`);
      return c;
    };
    const awaitCertificate = (): Promise<WorkloadCertificate> => this.#awaitCertificate();
    const track = (s: Duplex): void => {
      this.#open.add(s);
      s.once('close', () => this.#open.delete(s));
    };
    this.#client = new HboneClient({
      certificate,
      revocation: ctx.revocations.current,
      settings: ctx.hbone,
      dial: (peer) => this.#sockets.dial({ host: peer.host, port: peer.port }),
    });
    const localWorkload = (): Promise<Workload | undefined> => this.#localWorkload();
    const inbound = new InboundHandler({ ctx, sockets: this.#sockets, localWorkload, track });
    this.#server = new HboneServer({
      certificate,
      revocation: ctx.revocations.current,
      trustDomain: ctx.trustDomain,
      settings: ctx.hbone,
      onConnect: inbound.onConnect,
      onTunnelClosed: inbound.onTunnelClosed,
    });
    this.#server.on('peerRejected', (err, remoteAddress) => {
      const revoked = err instanceof HboneError && err.code === 'HBONE_ERR_PEER_REVOKED';
      if (revoked) ctx.metrics.crlRejections.inc({ reporter: 'destination' });
      ctx.logger.warn(
        {
          scope: revoked ? 'crl' : 'proxy',
          pod: `${this.pod.namespace}/${this.pod.name}`,
          src: remoteAddress ?? 'unknown',
          err: err.message,
        },
        'inbound HBONE client refused at the handshake',
      );
    });
    const p = this.#ports;
    try {
      const outbound = await this.#sockets.listen({
        host: p.host,
        port: p.outbound,
        transparent: true,
        reusePort: true,
      });
      this.#listeners.push(outbound);
      const plain = await this.#sockets.listen({
        host: p.host,
        port: p.inboundPlaintext,
        transparent: true,
        reusePort: true,
      });
      this.#listeners.push(plain);
      const hbone = await this.#sockets.listen({
        host: p.host,
        port: p.hbone,
        transparent: true,
        reusePort: true,
      });
      this.#listeners.push(hbone);
      const client = this.#client;
      const logError = (what: string) => (err: unknown) =>
        ctx.logger.warn(
          { scope: 'proxy', pod: `${this.pod.namespace}/${this.pod.name}`, err: errorMessage(err) },
          what,
        );
      outbound.on('connection', (s: net.Socket) => {
        if (this.#shed(s, 'outbound')) return;
        track(s);
        s.on('error', () => undefined);
        // A transparent proxy must not add Nagle delays the application did not ask for.
        s.setNoDelay(true);
        handleOutbound(
          {
            ctx,
            sockets: this.#sockets,
            client,
            awaitCertificate,
            localWorkload: () => this.#outboundSource(s),
            track,
          },
          s,
        ).catch(logError('outbound'));
      });
      plain.on('connection', (s: net.Socket) => {
        if (this.#shed(s, 'inbound_plaintext')) return;
        track(s);
        s.on('error', () => undefined);
        s.setNoDelay(true);
        handleInboundPlaintext({ ctx, sockets: this.#sockets, localWorkload, track }, s).catch(
          logError('inbound plaintext'),
        );
      });
      const server = this.#server;
      hbone.on('connection', (s: net.Socket) => {
        if (this.#shed(s, 'inbound')) return;
        if (ctx.certs.current(this.identity) !== undefined) server.handleSocket(s);
        else this.#handleHboneBeforeCertificate(server, s, logError('inbound HBONE'));
      });
      for (const l of this.#listeners) l.on('error', logError('listener'));
    } catch (err) {
      await this.stop(0);
      throw err;
    }
  }

  /**
   * Under memory pressure (ctx.overload), refuses a just-accepted connection with a reset before
   * any work is done for it: no TLS, no routing, no log line each (the guard logs the episode).
   */
  #shed(s: net.Socket, listener: 'outbound' | 'inbound' | 'inbound_plaintext'): boolean {
    const ctx = this.#ctx;
    if (!ctx.overload.shedding) return false;
    ctx.overload.noteShed();
    ctx.metrics.overloadShed.inc({ listener });
    s.on('error', () => undefined);
    s.resetAndDestroy();
    return true;
  }

  /**
   * Stops accepting at once, then lets established connections finish for up to `deadlineMs`
   * before destroying what is left; deadlineMs = 0 tears everything down immediately. A ZDS Del
   * drains for the drain deadline (WorkloadManager.del, decision 13); upstream tears down at once.
   */
  async stop(deadlineMs: number): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#ctx.store.off('changed', this.#onStoreChange);
    for (const l of this.#listeners) l.close();
    // Not yet handshaken: nothing of theirs was served, nothing to drain.
    for (const s of this.#awaitingCert) s.resetAndDestroy();
    this.#awaitingCert.clear();
    const waits: Promise<unknown>[] = [];
    if (this.#server) waits.push(this.#server.close({ deadlineMs }));
    if (deadlineMs > 0 && this.#open.size > 0) {
      waits.push(
        new Promise<void>((resolve) => {
          const done = (): void => {
            clearTimeout(deadline);
            clearInterval(poll);
            resolve();
          };
          const deadline = setTimeout(done, deadlineMs);
          const poll = setInterval(() => {
            if (this.#open.size === 0) done();
          }, 50);
        }),
      );
    }
    await Promise.allSettled(waits);
    for (const s of this.#open) s.destroy();
    this.#open.clear();
    if (this.#client) await this.#client.close();
    // Only now: a peer revoked while its tunnels drained is still cut off (B.31).
    this.#ctx.revocations.off('changed', this.#onRevocationsChange);
  }

  /**
   * The pod's certificate: the current one, else the fetch in flight (raised to RealTime), for up
   * to certificateWaitMs. Rejects when the fetch fails, the wait runs out or a retry after a
   * failure is pending: the caller refuses the connection.
   */
  async #awaitCertificate(): Promise<WorkloadCertificate> {
    const certs = this.#ctx.certs;
    const current = certs.current(this.identity);
    if (current !== undefined) return current;
    const ms = this.#ctx.certificateWaitMs;
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        certs.getCertificate(this.identity),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            reject(
              new MeshError(
                'ZT_ERR_CERTIFICATE',
                `no certificate for ${this.identity} within ${ms} ms; check the CA connection`,
              ),
            );
          }, ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** An inbound HBONE connection that arrived before the certificate: handshake once it is here. */
  #handleHboneBeforeCertificate(server: HboneServer, s: net.Socket, logError: (err: unknown) => void): void {
    this.#awaitingCert.add(s);
    s.on('error', () => undefined);
    s.once('close', () => this.#awaitingCert.delete(s));
    this.#awaitCertificate().then(
      () => {
        if (!this.#awaitingCert.delete(s)) return; // closed, or the proxy stopped meanwhile
        server.handleSocket(s);
      },
      (err: unknown) => {
        if (!this.#awaitingCert.delete(s)) return;
        s.resetAndDestroy();
        logError(err);
      },
    );
  }

  /**
   * The source of an outbound connection: the pod's own WDS workload; while WDS has no workload
   * of this name on this node, the pod as ZDS describes it when the destination is a known mesh
   * workload reached directly over HBONE; otherwise the wait for WDS (see the file header).
   */
  #outboundSource(s: net.Socket): Promise<Workload | undefined> {
    const own = this.#findLocal();
    if (own !== undefined) return Promise.resolve(own);
    const provisional = this.#namedInWds() ? undefined : this.#provisionalSource(s);
    return provisional !== undefined ? Promise.resolve(provisional) : this.#localWorkload();
  }

  #provisionalSource(s: net.Socket): Workload | undefined {
    let dst;
    try {
      dst = this.#sockets.originalDst(s);
    } catch {
      return undefined;
    }
    const ctx = this.#ctx;
    const src = s.remoteAddress === undefined ? undefined : canonicalIp(s.remoteAddress);
    const source = newWorkload({
      // Never a WDS uid, so it can never be taken for a waypoint or an endpoint.
      uid: `zds:${this.pod.uid}`,
      // No workload name or labels: WDS has not said yet (metrics report `unknown`).
      name: '',
      namespace: this.pod.namespace,
      serviceAccount: this.pod.serviceAccount,
      trustDomain: ctx.trustDomain,
      node: ctx.nodeName,
      network: ctx.network,
      addresses: src === undefined ? [] : [src],
      tunnelProtocol: 'HBONE',
    });
    const route = routeOutbound(ctx.store, {
      source,
      origDst: { ip: canonicalIp(dst.address) ?? dst.address, port: dst.port },
      network: ctx.network,
    });
    if (route.kind !== 'hbone' || route.waypoint === true) return undefined;
    // Locality preferences compare the source's locality, which only WDS knows.
    if ((route.service?.loadBalancing?.routingPreference.length ?? 0) > 0) return undefined;
    return source;
  }

  /** The pod's own WDS workload: matched on (name, namespace, service account, node) per spec §1.7. */
  async #localWorkload(): Promise<Workload | undefined> {
    const found = this.#findLocal();
    if (found !== undefined || this.#ctx.workloadWaitMs <= 0) return found;
    // Not known yet: wait for WDS up to workloadWaitMs (spec §1.3: "waits up to 5 s").
    return new Promise((resolve) => {
      const store = this.#ctx.store;
      const onChange = (): void => {
        const w = this.#findLocal();
        if (w !== undefined) finish(w);
      };
      const timer = setTimeout(() => finish(undefined), this.#ctx.workloadWaitMs);
      const finish = (w: Workload | undefined): void => {
        clearTimeout(timer);
        store.off('changed', onChange);
        resolve(w);
      };
      store.on('changed', onChange);
    });
  }

  #findLocal(): Workload | undefined {
    if (this.#localValid) return this.#local;
    const p = this.pod;
    this.#local = this.#ctx.store
      .localWorkloads(this.#ctx.nodeName)
      .find((w) => w.name === p.name && w.namespace === p.namespace && w.serviceAccount === p.serviceAccount);
    this.#localValid = true;
    return this.#local;
  }

  /**
   * Whether WDS has any workload of this pod's name and namespace on this node: one that is not
   * the pod's (another service account) means WDS and ZDS disagree, and nothing goes provisionally.
   */
  #namedInWds(): boolean {
    const p = this.pod;
    return this.#ctx.store
      .localWorkloads(this.#ctx.nodeName)
      .some((w) => w.name === p.name && w.namespace === p.namespace);
  }
}
