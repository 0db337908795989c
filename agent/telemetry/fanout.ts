// One RecordSink that hands each record to several (metrics, access log,
// tracing, stats summary). A sink that throws is counted, not propagated:
// the data path must never see telemetry fail.
import type { RecordSink, TrafficRecord } from '../proxy/record';

/** A sink over `sinks`, in order; `errors()` counts throws swallowed. */
export function fanout(sinks: readonly RecordSink[]): RecordSink & { errors(): number } {
  let errors = 0;
  const list = [...sinks];
  return {
    open(conn) {
      for (const s of list) {
        try {
          s.open(conn);
        } catch {
          errors++;
        }
      }
    },
    finish(record: TrafficRecord) {
      for (const s of list) {
        try {
          s.finish(record);
        } catch {
          errors++;
        }
      }
    },
    errors: () => errors,
  };
}
