// SPDX-License-Identifier: Apache-2.0
// `npm run gen`: generates TypeScript from our .proto files (src/shared/proto/) into
// src/shared/gen/ with Debian's protoc and the ts-proto plugin from node_modules. Offline and
// deterministic: the same inputs give byte-identical output. The well-known types
// (google/protobuf/*.proto) come with protoc (/usr/include). ts-proto options and why:
// src/shared/proto/README.md ("Code generation"). `npm run gen:check` (scripts/gen-check.ts)
// regenerates into a temporary directory and compares.
//
// Usage: node scripts/gen.ts [--out <dir>]   (default: src/shared/gen, replaced entirely)
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { delimiter, join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';

export const ROOT = resolve(import.meta.dirname, '..');
export const GEN_DIR = 'src/shared/gen';
const PROTO_DIR = 'src/shared/proto';
const TIMEOUT_MS = 120_000;

export const TS_PROTO_OPTIONS = [
  'esModuleInterop=true',
  'importSuffix=.ts',
  'forceLong=number',
  'useOptionals=messages',
  'oneof=unions-value',
  'enumsAsLiterals=true',
  'unrecognizedEnum=false',
  'useMapType=true',
  'useUnknownForValue=true',
  'outputServices=grpc-js',
];

function protoFiles(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...protoFiles(p));
    else if (name.endsWith('.proto')) out.push(relative(join(ROOT, PROTO_DIR), p));
  }
  return out;
}

/** Generates into `outDir` (created; emptied first). Returns an error message, or undefined. */
export function generate(outDir: string): string | undefined {
  const bin = join(ROOT, 'node_modules/.bin');
  rmSync(outDir, { recursive: true, force: true });
  mkdirSync(outDir, { recursive: true });
  const args = [
    `--plugin=protoc-gen-ts_proto=${join(bin, 'protoc-gen-ts_proto')}`,
    `--ts_proto_out=${outDir}`,
    `--ts_proto_opt=${TS_PROTO_OPTIONS.join(',')}`,
    `--proto_path=${join(ROOT, PROTO_DIR)}`,
    ...protoFiles(join(ROOT, PROTO_DIR)),
  ];
  const res = spawnSync('protoc', args, {
    cwd: ROOT,
    // node_modules/.bin first: the plugin's `#!/usr/bin/env node` must get the pinned Node 24.
    env: { ...process.env, PATH: `${bin}${delimiter}${process.env.PATH ?? ''}` },
    encoding: 'utf8',
    timeout: TIMEOUT_MS,
  });
  if (res.error !== undefined) {
    const missing = (res.error as NodeJS.ErrnoException).code === 'ENOENT';
    return missing
      ? 'protoc not found: apt-get install protobuf-compiler (or run scripts/bootstrap.sh)'
      : `protoc failed: ${res.error.message}`;
  }
  if (res.status !== 0) return `protoc exited ${String(res.status)}:\n${res.stderr}`;
  return undefined;
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  const err = generate(resolve(ROOT, values.out ?? GEN_DIR));
  if (err !== undefined) {
    process.stderr.write(`gen: ${err}\n`);
    process.exitCode = 2;
  }
}
