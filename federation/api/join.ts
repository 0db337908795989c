// What a joining host downloads from the federation, without credentials
// (nothing here is secret; the join token travels only after the host has
// checked the root it fetched against the pin in its join string):
//
//   GET /join.sh                  the join script (install/join.sh)
//   GET /join/root-cert.pem       the mesh root(s), the bytes the pin hashes
//   GET /join/info                version, gRPC port, root pin, packages
//   GET /join/packages/<file>     a package from the federation's packageDir
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as path from 'node:path';
import { rootFingerprint } from '../../proto/model/join';

/** What the join routes read. */
export interface JoinDeps {
  version: string;
  grpcPort: () => number;
  /** The PEM the pin is taken over: the trust bundle as written to root-cert.pem. */
  rootPem: () => string;
  /** Folder holding kedge_<version>_amd64.deb and kedge_<version>_linux_amd64.tar.gz; undefined: none served. */
  packageDir: string | undefined;
  /** install/join.sh. */
  scriptFile: string;
}

/** The join info a host (and `kedge token create --join`) reads. */
export interface JoinInfo {
  version: string;
  grpcPort: number;
  rootSha256: string;
  packages: string[];
}

const PACKAGE_NAME = /^kedge_[0-9A-Za-z.+~-]+_(amd64\.deb|linux_amd64\.tar\.gz)$/;

/** The packages served: files in packageDir named like Kedge packages. */
export function listPackages(dir: string | undefined): string[] {
  if (!dir) return [];
  try {
    return fs.readdirSync(dir).filter((f) => PACKAGE_NAME.test(f)).sort();
  } catch {
    return [];
  }
}

/** Serves a join route; returns false when the path is not one. */
export function handleJoinRoute(req: http.IncomingMessage, res: http.ServerResponse, pathname: string, deps: JoinDeps): boolean {
  if (pathname !== '/join.sh' && !pathname.startsWith('/join/')) return false;
  const text = (status: number, body: string, type = 'text/plain; charset=utf-8') => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    text(405, `${req.method} is not allowed on ${pathname}\n`);
    return true;
  }
  if (pathname === '/join.sh') {
    text(200, fs.readFileSync(deps.scriptFile, 'utf8'), 'text/x-shellscript; charset=utf-8');
  } else if (pathname === '/join/root-cert.pem') {
    text(200, deps.rootPem(), 'application/x-pem-file');
  } else if (pathname === '/join/info') {
    const info: JoinInfo = { version: deps.version, grpcPort: deps.grpcPort(), rootSha256: rootFingerprint(deps.rootPem()), packages: listPackages(deps.packageDir) };
    text(200, `${JSON.stringify(info, null, 2)}\n`, 'application/json');
  } else if (pathname.startsWith('/join/packages/')) {
    const name = decodeURIComponent(pathname.slice('/join/packages/'.length));
    if (!PACKAGE_NAME.test(name) || !deps.packageDir) {
      text(404, `no package ${name} here${deps.packageDir ? '' : ' (this federation serves none: set packageDir in its config)'}\n`);
      return true;
    }
    const file = path.join(deps.packageDir, name);
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch {
      text(404, `no package ${name} in ${deps.packageDir}; this federation serves: ${listPackages(deps.packageDir).join(', ') || 'none'}\n`);
      return true;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
    if (req.method === 'HEAD') res.end();
    else fs.createReadStream(file).on('error', () => res.destroy()).pipe(res);
  } else {
    text(404, `no join route ${pathname}\n`);
  }
  return true;
}
