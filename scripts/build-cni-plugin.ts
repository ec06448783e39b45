// SPDX-License-Identifier: Apache-2.0
// Builds the ambient CNI plugin as a Node single executable application (DESIGN.md decision 8):
// the runtime executes it on the node's host, where Node.js may not be installed.
//
//   1. Bundle. The plugin's modules (cni-plugin/src/plugin/main.ts and the relative imports it
//      reaches) are compiled one by one to CommonJS with TypeScript's transpileModule (the SEA main
//      script must be CommonJS in Node 24) and concatenated into build/cni/ambient-cni.cjs, each
//      module wrapped in a function with a require() that knows only the other modules of the
//      bundle. Node's built-in modules are loaded in the sources with process.getBuiltinModule, so
//      the bundle needs no other loader; any other import is refused here with the file named.
//      The .cjs also runs as `node build/cni/ambient-cni.cjs`.
//   2. Blob: `node --experimental-sea-config` with code cache on, no extra execArgv and
//      execArgvExtension "none", so NODE_OPTIONS in the runtime's environment cannot change what
//      runs in the plugin.
//   3. Executable: a copy of the project's pinned Node 24 binary (node_modules/node) with the blob
//      injected by postject under the SEA sentinel fuse, smoke-tested with a VERSION call before it
//      replaces build/cni/ambient-cni (mode 0755) by rename.
//
// Idempotent and quick when nothing changed: the inputs' hashes, the node binary's identity and
// this script's hash are recorded next to the output; a rebuild happens only when one differs (or
// with --force). Concurrent runs are safe: every intermediate file has a per-process name and the
// outputs are replaced by rename.
//
// Usage: node scripts/build-cni-plugin.ts [--force]   (prints the executable's path last)
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

const root = resolve(import.meta.dirname, '..');
const ENTRY = 'cni-plugin/src/plugin/main.ts';
const OUT_DIR = join(root, 'build/cni');
const EXE = join(OUT_DIR, 'ambient-cni');
const BUNDLE = join(OUT_DIR, 'ambient-cni.cjs');
const STAMP = join(OUT_DIR, 'ambient-cni.inputs.json');
const NODE = join(root, 'node_modules/node/bin/node');
const POSTJECT = join(root, 'node_modules/postject/dist/cli.js');
/** The fuse Node's SEA loader looks for (doc/api/single-executable-applications.md). */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

class BuildError extends Error {}

function sha256(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

interface Stamp {
  node: { path: string; size: number; mtimeMs: number };
  script: string;
  inputs: Record<string, string>;
}

function nodeIdentity(): Stamp['node'] {
  const path = realpathSync(NODE);
  const st = statSync(path);
  return { path, size: st.size, mtimeMs: st.mtimeMs };
}

/** True when the executable exists and nothing it was built from has changed. */
function upToDate(): boolean {
  if (!existsSync(EXE) || !existsSync(STAMP)) return false;
  let stamp: Stamp;
  try {
    stamp = JSON.parse(readFileSync(STAMP, 'utf8')) as Stamp;
  } catch {
    return false;
  }
  if (stamp.script !== sha256(readFileSync(import.meta.filename))) return false;
  if (JSON.stringify(stamp.node) !== JSON.stringify(nodeIdentity())) return false;
  return Object.entries(stamp.inputs).every(([file, hash]) => {
    try {
      return sha256(readFileSync(join(root, file))) === hash;
    } catch {
      return false;
    }
  });
}

interface Module {
  id: string;
  code: string;
  /** require() specifier → module id. */
  deps: Record<string, string>;
  hash: string;
}

const REQUIRE_RE = /\brequire\("([^"]*)"\)/g;

function compileModule(id: string): Module {
  const source = readFileSync(join(root, id), 'utf8');
  const out = ts.transpileModule(source, {
    fileName: id,
    reportDiagnostics: true,
    compilerOptions: {
      module: ts.ModuleKind.CommonJS,
      target: ts.ScriptTarget.ES2024,
      verbatimModuleSyntax: false,
      isolatedModules: true,
      esModuleInterop: false,
      sourceMap: false,
      removeComments: false,
    },
  });
  const errors = (out.diagnostics ?? []).filter((d) => d.category === ts.DiagnosticCategory.Error);
  if (errors.length > 0) {
    const text = errors.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')).join('; ');
    throw new BuildError(`${id}: ${text}`);
  }
  if (/\bimport\s*\(|\bimport\.meta\b/.test(out.outputText)) {
    throw new BuildError(`${id}: dynamic import() and import.meta are not available in the plugin bundle`);
  }
  const deps: Record<string, string> = {};
  for (const m of out.outputText.matchAll(REQUIRE_RE)) {
    const spec = m[1] ?? '';
    if (!spec.startsWith('./') && !spec.startsWith('../')) {
      throw new BuildError(
        `${id} imports "${spec}" at run time; the plugin bundle holds only its own relative modules: ` +
          `load Node built-ins with process.getBuiltinModule("${spec}") and use \`import type\` for types`,
      );
    }
    const target = relative(root, resolve(root, dirname(id), spec));
    if (target.startsWith('..') || !target.endsWith('.ts')) {
      throw new BuildError(`${id} imports "${spec}", which is not a .ts file of this repository`);
    }
    deps[spec] = target;
  }
  return { id, code: out.outputText, deps, hash: sha256(source) };
}

/** Every module the entry reaches, in a stable order (the entry first). */
function collect(entry: string): Module[] {
  const seen = new Map<string, Module>();
  const queue = [entry];
  for (let id = queue.shift(); id !== undefined; id = queue.shift()) {
    if (seen.has(id)) continue;
    const mod = compileModule(id);
    seen.set(id, mod);
    queue.push(...Object.values(mod.deps));
  }
  return [...seen.values()];
}

function bundle(modules: Module[], entry: string): string {
  const parts = [
    '// Generated by scripts/build-cni-plugin.ts from cni-plugin/src/plugin/main.ts and the modules it imports: do not edit.',
    "'use strict';",
    'const modules = {',
  ];
  for (const m of modules) {
    parts.push(
      `${JSON.stringify(m.id)}: [function (exports, require, module) {`,
      m.code,
      `}, ${JSON.stringify(m.deps)}],`,
    );
  }
  parts.push(
    '};',
    'const cache = {};',
    'function load(id) {',
    '  const cached = cache[id];',
    '  if (cached !== undefined) return cached.exports;',
    '  const [body, deps] = modules[id];',
    '  const module = { exports: {} };',
    '  cache[id] = module;',
    '  body.call(module.exports, module.exports, (spec) => {',
    '    const dep = deps[spec];',
    "    if (dep === undefined) throw new Error('module ' + spec + ' is not in the plugin bundle (from ' + id + ')');",
    '    return load(dep);',
    '  }, module);',
    '  return module.exports;',
    '}',
    `load(${JSON.stringify(entry)});`,
    '',
  );
  return parts.join('\n');
}

function run(cmd: string, args: string[], what: string, env?: NodeJS.ProcessEnv): string {
  const r = spawnSync(cmd, args, {
    cwd: OUT_DIR,
    encoding: 'utf8',
    env: env ?? process.env,
    timeout: 120_000,
  });
  if (r.error !== undefined) throw new BuildError(`${what}: ${r.error.message}`);
  if (r.status !== 0) {
    throw new BuildError(
      `${what} failed (exit ${String(r.status ?? r.signal)}): ${r.stderr.trim() || r.stdout.trim()}`,
    );
  }
  return r.stdout;
}

function writeAtomic(path: string, data: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, data);
  renameSync(tmp, path);
}

function build(): void {
  if (!existsSync(NODE)) throw new BuildError(`${NODE} is missing: run npm ci (devDependency "node")`);
  if (!existsSync(POSTJECT)) {
    throw new BuildError(`${POSTJECT} is missing: run npm ci (devDependency "postject")`);
  }
  mkdirSync(OUT_DIR, { recursive: true });
  const nodeId = nodeIdentity();
  const modules = collect(ENTRY);
  const tag = `${process.pid}`;
  const bundleTmp = join(OUT_DIR, `.ambient-cni.${tag}.cjs`);
  const blob = join(OUT_DIR, `.ambient-cni.${tag}.blob`);
  const seaConfig = join(OUT_DIR, `.ambient-cni.${tag}.sea.json`);
  const exeTmp = join(OUT_DIR, `.ambient-cni.${tag}.exe`);
  try {
    writeFileSync(bundleTmp, bundle(modules, ENTRY));
    writeFileSync(
      seaConfig,
      JSON.stringify({
        main: bundleTmp,
        output: blob,
        disableExperimentalSEAWarning: true,
        useCodeCache: true,
        execArgv: [],
        execArgvExtension: 'none',
      }),
    );
    run(NODE, ['--experimental-sea-config', seaConfig], 'generating the SEA blob');
    copyFileSync(nodeId.path, exeTmp);
    chmodSync(exeTmp, 0o755);
    run(NODE, [POSTJECT, exeTmp, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], 'postject');
    // A broken injection must not replace a working binary.
    const started = process.hrtime.bigint();
    const out = run(exeTmp, [], 'smoke test (CNI_COMMAND=VERSION)', {
      PATH: '/usr/bin:/bin',
      CNI_COMMAND: 'VERSION',
    });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (!out.includes('"supportedVersions"')) {
      throw new BuildError(`smoke test: the executable answered VERSION with ${JSON.stringify(out)}`);
    }
    renameSync(bundleTmp, BUNDLE);
    renameSync(exeTmp, EXE);
    const stamp: Stamp = {
      node: nodeId,
      script: sha256(readFileSync(import.meta.filename)),
      inputs: Object.fromEntries(modules.map((m) => [m.id, m.hash])),
    };
    writeAtomic(STAMP, `${JSON.stringify(stamp, null, 2)}\n`);
    process.stderr.write(
      `build-cni-plugin: built ${relative(root, EXE)} from ${modules.length} modules; VERSION answered in ${ms.toFixed(0)} ms\n`,
    );
  } finally {
    for (const f of [bundleTmp, blob, seaConfig, exeTmp]) rmSync(f, { force: true });
  }
}

try {
  if (!process.argv.includes('--force') && upToDate()) {
    process.stderr.write(`build-cni-plugin: ${relative(root, EXE)} is up to date\n`);
  } else {
    build();
  }
  process.stdout.write(`${EXE}\n`);
} catch (e) {
  if (!(e instanceof BuildError)) throw e;
  process.stderr.write(`build-cni-plugin: ${e.message}\n`);
  process.exitCode = 1;
}
