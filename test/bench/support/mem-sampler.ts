// Memory of a benchmarked process over time, from the inside: preloaded with
// `node --require dist/test/bench/support/mem-sampler.js` (the federation-push
// benchmark does so with --mem-log=DIR). Every KEDGE_BENCH_MEM_MS (default
// 250) it appends one JSON line to $KEDGE_BENCH_MEM_LOG: process.memoryUsage()
// (RSS, V8 heap total/used, external, ArrayBuffers) and the used/committed size
// of each V8 heap space, so a peak RSS can be split into live old-space data,
// heap headroom and off-heap buffers (TLS, HTTP/2, gRPC frames).
//
// It only reads counters; the sampling itself allocates a few hundred bytes per
// line and is unreferenced, so it never keeps the process alive.
import { appendFileSync } from 'node:fs';
import * as inspector from 'node:inspector';
import { getHeapSpaceStatistics } from 'node:v8';

/** One line of the memory log; sizes in bytes, `at` is Date.now(). */
export interface MemSample {
  at: number;
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** Per V8 space: [used, committed]. */
  spaces: Record<string, [number, number]>;
}

const file = process.env.KEDGE_BENCH_MEM_LOG;
if (file) {
  const every = Number(process.env.KEDGE_BENCH_MEM_MS ?? 250);
  const sample = () => {
    const m = process.memoryUsage();
    const spaces: MemSample['spaces'] = {};
    for (const s of getHeapSpaceStatistics()) spaces[s.space_name] = [s.space_used_size, s.space_size];
    const line: MemSample = { at: Date.now(), rss: m.rss, heapTotal: m.heapTotal, heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, spaces };
    appendFileSync(file, `${JSON.stringify(line)}\n`);
  };
  sample();
  setInterval(sample, every).unref();
}

// With $KEDGE_BENCH_ALLOC_PROFILE=FILE, SIGUSR2 starts V8's sampling heap
// profiler and the next SIGUSR2 writes what it saw to FILE (.heapprofile, for
// Chrome DevTools). Objects collected by a scavenge are left out but those
// collected by a full GC are kept, so the profile shows what was promoted to
// old space: the allocations that make the old generation grow between full
// GCs (live objects are in it too; a second profile with
// KEDGE_BENCH_ALLOC_PROFILE_MAJOR=0 shows only those, to tell them apart).
const allocFile = process.env.KEDGE_BENCH_ALLOC_PROFILE;
if (allocFile) {
  const session = new inspector.Session();
  session.connect();
  let sampling = false;
  process.on('SIGUSR2', () => {
    if (!sampling) {
      sampling = true;
      session.post('HeapProfiler.startSampling', {
        samplingInterval: 16 * 1024,
        includeObjectsCollectedByMajorGC: process.env.KEDGE_BENCH_ALLOC_PROFILE_MAJOR !== '0',
        includeObjectsCollectedByMinorGC: false,
      } as never);
      return;
    }
    sampling = false;
    session.post('HeapProfiler.stopSampling', (err, res) => {
      if (!err) appendFileSync(allocFile, JSON.stringify(res.profile));
    });
  });
}
