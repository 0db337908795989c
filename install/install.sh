#!/usr/bin/env bash
# Joins this host to a Kedge mesh in one command:
#
#   install.sh --federation 10.0.0.5:15012 --root-cert root-cert.pem --token TOKEN \
#              --name vm-1 --namespace shop --service-account payments \
#              [--address 10.0.0.7] [--locality region/zone] [--network net-a] \
#              [--service payments:9080:18080:http ...] [--upstream reviews.default:9080:127.0.0.1:19080 ...]
#
# Installs Kedge from this checkout (built with npm ci) into --prefix
# (/opt/kedge), creates the kedge user, writes /etc/kedge/agent.yaml,
# the token and the root certificate, and enables the systemd service.
# --no-systemd writes everything but starts nothing; --root DIR installs into
# a staging tree (used by the tests).
set -euo pipefail

die() { echo "install.sh: $*" >&2; exit 2; }

src="$(cd "$(dirname "$0")/.." && pwd)"
root="" prefix=/opt/kedge systemd=1
federation="" rootcert="" token="" name="" namespace="" sa="" address="" locality="" network=""
services=() upstreams=()
while [ $# -gt 0 ]; do
  case "$1" in
    --federation) federation="$2"; shift 2 ;;
    --root-cert) rootcert="$2"; shift 2 ;;
    --token) token="$2"; shift 2 ;;
    --token-file) token="$(cat "$2")" || die "cannot read --token-file $2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    --namespace) namespace="$2"; shift 2 ;;
    --service-account) sa="$2"; shift 2 ;;
    --address) address="$2"; shift 2 ;;
    --locality) locality="$2"; shift 2 ;;
    --network) network="$2"; shift 2 ;;
    --service) services+=("$2"); shift 2 ;;
    --upstream) upstreams+=("$2"); shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --root) root="$2"; shift 2 ;;
    --no-systemd) systemd=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
for v in federation rootcert token name namespace sa; do
  [ -n "${!v}" ] || die "missing --${v/rootcert/root-cert} (see --help)"
done
[ "${sa}" ] || true
[ -r "$rootcert" ] || die "cannot read --root-cert $rootcert"
grep -q "BEGIN CERTIFICATE" "$rootcert" || die "--root-cert $rootcert holds no PEM certificate"
command -v node >/dev/null || die "node (20.19 or newer) is required"
[ -f "$src/dist/bin/kedge.js" ] || die "$src is not built: run npm ci there first"

etc="$root/etc/kedge" state="$root/var/lib/kedge" dest="$root$prefix"
mkdir -p "$etc" "$state/agent" "$dest"
# Copy the built tree (dist, proto sources, dependencies, package.json).
for part in dist proto node_modules package.json bin; do
  rm -rf "${dest:?}/$part"
  cp -a "$src/$part" "$dest/$part"
done

install -m 0644 "$rootcert" "$etc/root-cert.pem"
( umask 077; printf '%s\n' "$token" > "$etc/token" )

{
  echo "federation:"
  echo "  address: [$(echo "$federation" | sed 's/,/, /g')]"
  echo "  rootCert: /etc/kedge/root-cert.pem"
  echo "  tokenFile: /etc/kedge/token"
  echo "workload:"
  echo "  name: $name"
  echo "  namespace: $namespace"
  echo "  serviceAccount: $sa"
  [ -n "$address" ] && echo "  address: $address"
  [ -n "$locality" ] && echo "  locality: $locality"
  [ -n "$network" ] && echo "  network: $network"
  echo "services:"
  for s in "${services[@]+"${services[@]}"}"; do
    IFS=: read -r sname sport starget sproto <<<"$s"
    [ -n "$sname" ] && [ -n "$sport" ] || die "--service $s: use name:port[:targetPort[:protocol]]"
    echo "  - { name: $sname, ports: [ { name: ${sproto:-tcp}, port: $sport, targetPort: ${starget:-$sport}, protocol: ${sproto:-tcp} } ] }"
  done
  echo "upstreams:"
  for u in "${upstreams[@]+"${upstreams[@]}"}"; do
    IFS=: read -r usvc uport uhost ulport <<<"$u"
    [ -n "$usvc" ] && [ -n "$uport" ] && [ -n "$uhost" ] && [ -n "$ulport" ] || die "--upstream $u: use service.namespace:port:listenHost:listenPort"
    echo "  - { service: $usvc, port: $uport, listen: \"$uhost:$ulport\" }"
  done
  echo "dataDir: /var/lib/kedge/agent"
} > "$etc/agent.yaml.new"
# Relative to the staging root, the config names /etc/kedge paths; check it
# parses before it replaces anything.
sed "s#/etc/kedge#$etc#g; s#/var/lib/kedge#$state#g" "$etc/agent.yaml.new" > "$etc/agent.check.yaml"
node -e '
  const { loadAgentConfig } = require(process.argv[1]);
  try { loadAgentConfig(process.argv[2]); } catch (e) { console.error(e.message); process.exit(1); }
' "$dest/dist/agent/config.js" "$etc/agent.check.yaml" || die "generated config is invalid"
rm -f "$etc/agent.check.yaml"
mv "$etc/agent.yaml.new" "$etc/agent.yaml"

if [ -z "$root" ] && ! id kedge >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/kedge --shell /usr/sbin/nologin kedge
fi
if [ -z "$root" ]; then
  chown -R kedge:kedge /var/lib/kedge "$etc/token"
fi
mkdir -p "$root/etc/systemd/system"
sed "s#/opt/kedge#$prefix#g" "$src/systemd/kedge-agent.service" > "$root/etc/systemd/system/kedge-agent.service"

if [ "$systemd" = 1 ] && [ -z "$root" ]; then
  systemctl daemon-reload
  systemctl enable --now kedge-agent.service
  echo "kedge-agent is running; check it with: systemctl status kedge-agent"
else
  echo "installed into ${root:-/}; start it with: node $prefix/dist/bin/kedge.js agent --config /etc/kedge/agent.yaml"
fi
