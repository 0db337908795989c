// Why the first connection to etcd failed, when gRPC only says "No
// connection established": a TLS handshake made by hand with the same CA and
// client certificate names the certificate problem, and a plain TCP connect
// tells "nothing listens there" from "something listens but does not speak
// this client's gRPC" (a TLS etcd dialled without --etcd-ca).
import * as net from 'node:net';
import * as tls from 'node:tls';
import { parseHostPort } from '../../proto/model/address';
import { errorMessage } from '../../proto/model/errors';
import type { EtcdSecurity } from './etcd-rpc';

const PROBE_MS = 1_500;
// With TLS 1.3 a server that rejects the client certificate says so only
// after the client has finished its side of the handshake.
const ALERT_WAIT_MS = 300;

/**
 * A sentence saying what is wrong with the connection to `endpoint`, or
 * undefined when the probe finds nothing (etcd down, or a failure the probe
 * cannot see).
 */
export async function diagnoseEtcdConnection(endpoint: string, security: EtcdSecurity): Promise<string | undefined> {
  // As openEtcdStore takes it: host:port or [v6]:port, optionally with http(s)://.
  const { host, port } = parseHostPort(endpoint.replace(/^https?:\/\//, ''), 'etcd endpoint');
  if (!security.tls) {
    const listening = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host, port, timeout: PROBE_MS }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false)).on('timeout', () => (s.destroy(), resolve(false)));
    });
    return listening
      ? `${host}:${port} accepts connections but not plaintext gRPC: if etcd serves TLS (https:// client URLs), give --etcd-ca, and --etcd-cert and --etcd-key when it requires client certificates`
      : undefined;
  }
  const { caPem, certPem, keyPem } = security.tls;
  return new Promise((resolve) => {
    let done = false;
    let handshaken = false;
    const finish = (why: string | undefined) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(why);
    };
    const socket = tls.connect({
      host,
      port,
      ca: caPem,
      ...(certPem && keyPem ? { cert: certPem, key: keyPem } : {}),
      ALPNProtocols: ['h2'],
      // An IP address is checked against the certificate's IP SANs; Node refuses it as SNI.
      ...(net.isIP(host) ? {} : { servername: host }),
    });
    const timer = setTimeout(() => finish(undefined), PROBE_MS);
    socket.on('secureConnect', () => {
      handshaken = true;
      clearTimeout(timer);
      setTimeout(() => finish(undefined), ALERT_WAIT_MS);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      const code = err.code ?? '';
      // OpenSSL's own text is a stack of internals; its code says it all.
      const what = code.startsWith('ERR_SSL_') ? code : `${errorMessage(err)}${code && !errorMessage(err).includes(code) ? ` (${code})` : ''}`;
      if (/ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT/.test(code)) return finish(undefined);
      if (handshaken || /ALERT_CERTIFICATE_REQUIRED|ALERT_BAD_CERTIFICATE|ALERT_UNKNOWN_CA|ALERT_CERTIFICATE_UNKNOWN|ALERT_HANDSHAKE_FAILURE/.test(code)) {
        return finish(`${host}:${port} ${certPem ? 'refused the client certificate' : 'requires a client certificate'} (${what}): give --etcd-cert and --etcd-key signed by a CA etcd trusts (its --trusted-ca-file)`);
      }
      if (/CERT|SIGNATURE|ISSUER|SELF_SIGNED|ERR_TLS_CERT_ALTNAME_INVALID/.test(code)) {
        return finish(`the TLS handshake with ${host}:${port} failed: ${what}; check that --etcd-ca is the CA that signed etcd's serving certificate and that the certificate names ${host}`);
      }
      if (/WRONG_VERSION_NUMBER|ECONNRESET|EPROTO/.test(code) || /wrong version number/i.test(errorMessage(err))) {
        return finish(`the TLS handshake with ${host}:${port} failed (${what}): if etcd serves plaintext (http:// client URLs), remove --etcd-ca, --etcd-cert and --etcd-key`);
      }
      finish(`the TLS handshake with ${host}:${port} failed: ${what}`);
    });
  });
}
