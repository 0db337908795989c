// Generates TypeScript types for proto/kedge/v1/*.proto into proto/generated.
// The loader options here must match proto/loader.ts (LOADER_OPTIONS).
import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const protoDir = join(root, 'proto');
const out = join(protoDir, 'generated');
const files = readdirSync(join(protoDir, 'kedge', 'v1')).filter((f) => f.endsWith('.proto')).map((f) => join('kedge', 'v1', f));
rmSync(out, { recursive: true, force: true });
execFileSync(process.execPath, [
  join(root, 'node_modules', '@grpc', 'proto-loader', 'build', 'bin', 'proto-loader-gen-types.js'),
  '--longs=Number', '--enums=String', '--defaults', '--oneofs', '--grpcLib=@grpc/grpc-js',
  '-I', protoDir, '-O', out, ...files,
], { stdio: 'inherit' });
