// Serves the dashboard's built assets (npm run build writes them to
// dist/federation/ui/public) under /ui/. The assets hold no data, so they
// are served without a token; every request the page makes carries one.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as http from 'node:http';

/** Where `npm run build` puts the dashboard, relative to this compiled file. */
export const DEFAULT_UI_DIR = path.join(__dirname, '..', 'ui', 'public');

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.svg': 'image/svg+xml',
  '.txt': 'text/plain; charset=utf-8',
};

// The page loads only its own files and talks only to the origin it came
// from; Cytoscape.js positions nodes with inline styles.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** Answers /ui and /ui/* from `dir`; the file list is read once, so no request names a path outside it. */
export function uiHandler(dir: string): (req: http.IncomingMessage, res: http.ServerResponse, pathname: string) => void {
  let files: Map<string, string> | undefined;
  const list = (): Map<string, string> => {
    if (files) return files;
    const found = new Map<string, string>();
    try {
      for (const name of fs.readdirSync(dir)) if (TYPES[path.extname(name)]) found.set(name, path.join(dir, name));
    } catch {
      // not built: answered below
    }
    if (found.size > 0) files = found;
    return found;
  };
  return (req, res, pathname) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (pathname === '/ui') {
      res.writeHead(301, { location: '/ui/' }).end();
      return;
    }
    const name = pathname === '/ui/' ? 'index.html' : pathname.slice('/ui/'.length);
    const file = list().get(name);
    if (!file) {
      const built = list().size > 0;
      const text = built ? `no dashboard file ${name}\n` : `the dashboard is not built in ${dir}: run npm run build\n`;
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end(text);
      return;
    }
    fs.readFile(file, (err, body) => {
      if (err) {
        res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`cannot read ${name}: ${err.message}\n`);
        return;
      }
      res.writeHead(200, {
        'content-type': TYPES[path.extname(name)]!,
        'content-length': body.length,
        'content-security-policy': CSP,
        'x-content-type-options': 'nosniff',
        'referrer-policy': 'no-referrer',
        // index.html names the bundle; the bundle's name does not change between builds.
        'cache-control': 'no-cache',
      });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  };
}
