// SPDX-License-Identifier: Apache-2.0
// Inbound CONNECT target validation: checklist A.4–A.7, spec §1.3 status codes and §1.7.
import t from 'tap';
import type { Authority, InboundValidation } from '../../../../ztunnel/src/proxy/inbound-validate.ts';
import { validateInbound } from '../../../../ztunnel/src/proxy/inbound-validate.ts';
import { StateStore } from '../../../../ztunnel/src/state/store.ts';
import type { Workload } from '../../../../ztunnel/src/state/types.ts';
import { newService, newWorkload } from '../../../../ztunnel/src/state/types.ts';

const POD_IP = '198.18.1.20';
const POD_IP6 = 'fd00:18:1::20';

function setup(): { store: StateStore; local: Workload } {
  const store = new StateStore();
  const local = newWorkload({
    uid: 'echo-1',
    name: 'echo-1',
    namespace: 'default',
    addresses: [POD_IP, POD_IP6],
    tunnelProtocol: 'HBONE',
    services: {
      'default/echo.default.svc.cluster.local': [{ servicePort: 80, targetPort: 8080 }],
      'default/named.default.svc.cluster.local': [],
      'default/metrics.default.svc.cluster.local': [],
      'shared/shared.example.com': [{ servicePort: 443, targetPort: 8443 }],
    },
  });
  store.upsertWorkload(local);
  store.upsertWorkload(
    newWorkload({ uid: 'other', name: 'other', namespace: 'default', addresses: ['198.18.1.30'] }),
  );
  store.upsertService(
    newService({
      name: 'echo',
      namespace: 'default',
      hostname: 'echo.default.svc.cluster.local',
      ports: [
        { servicePort: 80, targetPort: 8080 },
        { servicePort: 81, targetPort: 8081 },
      ],
    }),
  );
  store.upsertService(
    newService({
      name: 'named',
      namespace: 'default',
      hostname: 'named.default.svc.cluster.local',
      ports: [{ servicePort: 80, targetPort: 0 }],
    }),
  );
  store.upsertService(
    newService({
      name: 'metrics',
      namespace: 'default',
      hostname: 'metrics.default.svc.cluster.local',
      ports: [{ servicePort: 80, targetPort: 15020 }],
    }),
  );
  // A service this pod does not back.
  store.upsertService(
    newService({
      name: 'other',
      namespace: 'default',
      hostname: 'other.default.svc.cluster.local',
      ports: [{ servicePort: 80, targetPort: 80 }],
    }),
  );
  // A ServiceEntry-style hostname in another namespace that this pod backs.
  store.upsertService(
    newService({
      name: 'shared',
      namespace: 'shared',
      hostname: 'shared.example.com',
      ports: [{ servicePort: 443, targetPort: 443 }],
    }),
  );
  // Same hostname in a third namespace that this pod does not back.
  store.upsertService(
    newService({
      name: 'shared',
      namespace: 'zzz',
      hostname: 'shared.example.com',
      ports: [{ servicePort: 443, targetPort: 1 }],
    }),
  );
  return { store, local };
}

const ip = (addr: string, port: number): Authority => ({
  kind: 'ip',
  ip: addr,
  family: addr.includes(':') ? 6 : 4,
  port,
});
const host = (hostname: string, port: number): Authority => ({ kind: 'hostname', hostname, port });

type Want = { ok: true; ip: string; port: number } | { ok: false; status: 400 | 503; reason: RegExp };

t.test('validation table', async (t) => {
  const { store, local } = setup();
  const rows: { name: string; authority: Authority; landed?: string; local?: Workload | null; want: Want }[] =
    [
      {
        name: 'pod IP:port → upstream pod IP:port',
        authority: ip(POD_IP, 8080),
        want: { ok: true, ip: POD_IP, port: 8080 },
      },
      {
        name: 'IPv6 pod IP',
        authority: ip(POD_IP6, 8080),
        landed: POD_IP6,
        want: { ok: true, ip: POD_IP6, port: 8080 },
      },
      {
        name: 'IPv4-mapped landed address equals the IPv4 authority',
        authority: ip(POD_IP, 8080),
        landed: `::ffff:${POD_IP}`,
        want: { ok: true, ip: POD_IP, port: 8080 },
      },
      {
        name: 'IPv6 authority in non-canonical form',
        authority: ip('FD00:18:1:0:0:0:0:20', 8080),
        landed: POD_IP6,
        want: { ok: true, ip: POD_IP6, port: 8080 },
      },
      // 503: local workload unknown
      {
        name: 'local workload unknown → 503',
        authority: ip(POD_IP, 8080),
        local: null,
        want: { ok: false, status: 503, reason: /local workload unknown/ },
      },
      // A.4
      {
        name: 'A.4 authority IP ≠ landed IP → 400',
        authority: ip('198.18.1.30', 8080),
        want: { ok: false, status: 400, reason: /ip mismatch/ },
      },
      {
        name: 'A.4 other family of the same pod ≠ landed → 400',
        authority: ip(POD_IP6, 8080),
        want: { ok: false, status: 400, reason: /ip mismatch/ },
      },
      {
        name: 'landed IP is not an address of the local workload → 400',
        authority: ip('198.18.1.99', 8080),
        landed: '198.18.1.99',
        want: { ok: false, status: 400, reason: /not an address of local workload/ },
      },
      // A.5: ztunnel's ports
      ...[15001, 15006, 15008, 15053, 15080, 15000, 15020, 15021].map((port) => ({
        name: `A.5 self port ${port} → 503`,
        authority: ip(POD_IP, port),
        want: { ok: false as const, status: 503 as const, reason: /own ports.*self-call/ },
      })),
      {
        name: 'A.5 neighbouring port 15007 is fine',
        authority: ip(POD_IP, 15007),
        want: { ok: true, ip: POD_IP, port: 15007 },
      },
      // A.6
      ...[
        ['127.0.0.1', /loopback/],
        ['127.1.2.3', /loopback/],
        ['::1', /loopback/],
        ['::ffff:127.0.0.1', /loopback/],
        ['0.0.0.0', /unspecified/],
        ['::', /unspecified/],
        ['169.254.169.254', /link-local/],
        ['169.254.7.127', /link-local/],
        ['fe80::1', /link-local/],
        ['224.0.0.1', /multicast/],
        ['255.255.255.255', /multicast or broadcast/],
        ['ff02::1', /multicast/],
      ].map(([addr, reason]) => ({
        name: `A.6 ${String(addr)} → 400`,
        authority: ip(String(addr), 80),
        landed: String(addr),
        want: { ok: false as const, status: 400 as const, reason: reason as RegExp },
      })),
      {
        name: 'A.6 loopback even when landed claims loopback',
        authority: ip('127.0.0.1', 8080),
        landed: '127.0.0.1',
        want: { ok: false, status: 400, reason: /loopback/ },
      },
      {
        name: 'not an IP at all → 400',
        authority: ip('300.1.1.1', 80),
        want: { ok: false, status: 400, reason: /not an IP/ },
      },
      {
        name: 'port 0 → 400',
        authority: ip(POD_IP, 0),
        want: { ok: false, status: 400, reason: /invalid port/ },
      },
      {
        name: 'port 65536 → 400',
        authority: ip(POD_IP, 65536),
        want: { ok: false, status: 400, reason: /invalid port/ },
      },
      // Hostname form
      {
        name: "hostname: service port → this workload's target port, upstream = pod IP",
        authority: host('echo.default.svc.cluster.local', 80),
        want: { ok: true, ip: POD_IP, port: 8080 },
      },
      {
        name: 'hostname: Service.ports used when no per-workload mapping for that port',
        authority: host('echo.default.svc.cluster.local', 81),
        want: { ok: true, ip: POD_IP, port: 8081 },
      },
      {
        name: 'hostname: upstream follows the landed family',
        authority: host('echo.default.svc.cluster.local', 80),
        landed: POD_IP6,
        want: { ok: true, ip: POD_IP6, port: 8080 },
      },
      {
        name: 'hostname: targetPort 0 = service port',
        authority: host('named.default.svc.cluster.local', 80),
        want: { ok: true, ip: POD_IP, port: 80 },
      },
      {
        name: 'hostname: service in another namespace that this pod backs',
        authority: host('shared.example.com', 443),
        want: { ok: true, ip: POD_IP, port: 8443 },
      },
      {
        name: 'hostname: unmapped service port → 503',
        authority: host('echo.default.svc.cluster.local', 82),
        want: { ok: false, status: 503, reason: /no port mapping/ },
      },
      {
        name: 'A.7 hostname: unknown service → 503 (no DNS)',
        authority: host('nope.default.svc.cluster.local', 80),
        want: { ok: false, status: 503, reason: /no service/ },
      },
      {
        name: 'A.7 hostname: localhost → 503',
        authority: host('localhost', 80),
        want: { ok: false, status: 503, reason: /no service/ },
      },
      {
        name: 'A.7 hostname: a service this pod does not back → 503',
        authority: host('other.default.svc.cluster.local', 80),
        want: { ok: false, status: 503, reason: /no service/ },
      },
      {
        name: 'hostname mapping to a self port → 503',
        authority: host('metrics.default.svc.cluster.local', 80),
        want: { ok: false, status: 503, reason: /15020.*self-call/ },
      },
      {
        name: 'hostname with local workload unknown → 503',
        authority: host('echo.default.svc.cluster.local', 80),
        local: null,
        want: { ok: false, status: 503, reason: /local workload unknown/ },
      },
    ];
  for (const row of rows) {
    const got: InboundValidation = validateInbound({
      authority: row.authority,
      landedIp: row.landed ?? POD_IP,
      localWorkload: row.local === null ? undefined : (row.local ?? local),
      store,
    });
    if (row.want.ok) {
      t.same(got.ok ? got.upstream : got, { ip: row.want.ip, port: row.want.port }, row.name);
    } else {
      t.equal(got.ok, false, `${row.name}: refused`);
      if (!got.ok) {
        t.equal(got.status, row.want.status, `${row.name}: status`);
        t.match(got.reason, row.want.reason, `${row.name}: reason`);
      }
    }
  }
});

t.test("the upstream is always one of the local workload's own IPs (A.6 invariant)", async (t) => {
  const { store, local } = setup();
  const authorities: Authority[] = [
    ip(POD_IP, 80),
    ip(POD_IP6, 80),
    ip('198.18.1.30', 80),
    ip('127.0.0.1', 80),
    host('echo.default.svc.cluster.local', 80),
    host('shared.example.com', 443),
  ];
  const landings = [POD_IP, POD_IP6, '198.18.1.30', '127.0.0.1', '10.0.0.1', 'garbage'];
  for (const a of authorities) {
    for (const landedIp of landings) {
      const r = validateInbound({ authority: a, landedIp, localWorkload: local, store });
      if (r.ok)
        t.ok(
          local.addresses.includes(r.upstream.ip),
          `${JSON.stringify(a)} via ${landedIp} → ${r.upstream.ip}`,
        );
    }
  }
});
