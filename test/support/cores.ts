// The forwarding cores a data-path test file runs against: the TypeScript
// core always, the native core (agent/native) when its addon is built. CI
// builds it (g++ in .ci/run), so there both run; a machine without a
// compiler runs the TypeScript one and says so.
import { nativeCoreAvailable } from '../../agent/native/core';
import type { ProxyCore } from '../../agent/proxy/proxy';

export const PROXY_CORES: readonly ProxyCore[] = nativeCoreAvailable() ? ['typescript', 'native'] : ['typescript'];

if (!PROXY_CORES.includes('native')) console.warn('# the native forwarding core is not built (npm run build:native): data-path tests run against the TypeScript core only');
