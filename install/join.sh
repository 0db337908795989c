#!/bin/sh
# Joins this host to a Kedge mesh. The federation serves this script at
# https://FEDERATION:15014/join.sh; `kedge token create ... --join` prints
# the one command that fetches and runs it:
#
#   curl -fsSk https://FED:15014/join/root-cert.pem -o /tmp/kedge-root.pem &&
#   echo "PIN  /tmp/kedge-root.pem" | sha256sum -c --status &&
#   curl -fsS --cacert /tmp/kedge-root.pem https://FED:15014/join.sh |
#   sudo sh -s -- --federation https://FED:15014 --root-sha256 PIN 'kedge1.…'
#
# It checks the federation's root against the pinned fingerprint before
# anything else, preflights the host (systemd, iptables, disk), downloads the
# package the federation serves (no internet needed), installs it, hands the
# join string to `kedge join` (which writes /etc/kedge/agent.yaml and the
# token, 0600, removed once the identity is issued) and starts
# kedge-agent.service.
#
# options:
#   --federation URL     the federation's HTTPS API (https://HOST:PORT)
#   --root-sha256 HEX    SHA-256 of its root-cert.pem (in the join string too)
#   --root DIR           install into DIR instead of / (staging, tests)
#   --no-start           install and configure, start nothing
#   --no-capture         no iptables capture (explicit upstreams only)
#   --tarball            install the .tar.gz even where dpkg exists
#   --name NAME          workload name (default: the join string's, or the host name)
#   --address IP         the address the mesh reaches this host at (default: detected)
#   -h, --help           this text
set -eu

die() { echo "join.sh: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -eu/p' "$0" 2>/dev/null | sed '$d; s/^# \{0,1\}//' || true; }

federation="" pin="" root="" start=1 capture=1 tarball=0 join="" name="" address=""
while [ $# -gt 0 ]; do
  case "$1" in
    --federation) [ $# -ge 2 ] || die "--federation needs a URL"; federation="$2"; shift 2 ;;
    --root-sha256) [ $# -ge 2 ] || die "--root-sha256 needs a value"; pin="$2"; shift 2 ;;
    --root) [ $# -ge 2 ] || die "--root needs a directory"; root="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    --no-capture) capture=0; shift ;;
    --tarball) tarball=1; shift ;;
    --name) [ $# -ge 2 ] || die "--name needs a value"; name="$2"; shift 2 ;;
    --address) [ $# -ge 2 ] || die "--address needs a value"; address="$2"; shift 2 ;;
    -h|--help) usage; echo "(run it as printed by: kedge token create ... --join)"; exit 0 ;;
    kedge*) join="$1"; shift ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ -n "$join" ] || die "no join string given: run the command 'kedge token create ... --join' printed, whole"
[ -n "$federation" ] || die "missing --federation https://HOST:PORT"
case "$federation" in https://*) ;; *) die "--federation $federation: use https://HOST:PORT (the join refuses plain HTTP)" ;; esac
federation="${federation%/}"
echo "$pin" | grep -Eq '^[0-9a-f]{64}$' || die "--root-sha256 must be 64 hex digits (the pin printed with the join command)"

# Preflight: say everything that is missing before changing anything.
missing=""
if command -v curl >/dev/null 2>&1; then fetch=curl
elif command -v wget >/dev/null 2>&1; then fetch=wget
else missing="$missing curl-or-wget"; fi
command -v sha256sum >/dev/null 2>&1 || missing="$missing sha256sum(coreutils)"
command -v tar >/dev/null 2>&1 || missing="$missing tar"
if [ "$start" = 1 ]; then
  { command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; } || missing="$missing systemd(as init; or pass --no-start)"
fi
if [ "$capture" = 1 ]; then
  command -v iptables-restore >/dev/null 2>&1 || missing="$missing iptables(or pass --no-capture)"
fi
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then missing="$missing root(run with sudo)"; fi
[ -z "$missing" ] || die "this host lacks:$missing"

target="${root:-/}"
mkdir -p "$target"
# The runtime, program and modules take about 190 MB unpacked, and the
# download about 45 MB more; checked up front so a full disk stops us here.
need_kb=$((260 * 1024))
avail_kb=$(df -Pk "$target" | awk 'NR == 2 { print $4 }')
if [ -n "$avail_kb" ] && [ "$avail_kb" -lt "$need_kb" ]; then
  die "not enough disk space in $target: $((avail_kb / 1024)) MB free, the install needs $((need_kb / 1024)) MB"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/kedge-join.XXXXXX")
trap 'rm -rf "$work"' EXIT

get() { # get URL FILE [insecure]
  if [ "$fetch" = curl ]; then
    if [ "${3:-}" = insecure ]; then curl -fsSk "$1" -o "$2"; else curl -fsS --cacert "$work/root-cert.pem" "$1" -o "$2"; fi
  else
    if [ "${3:-}" = insecure ]; then wget -q --no-check-certificate "$1" -O "$2"; else wget -q --ca-certificate="$work/root-cert.pem" "$1" -O "$2"; fi
  fi
}

# 1. The root, checked against the pin before the token goes anywhere.
get "$federation/join/root-cert.pem" "$work/root-cert.pem" insecure || die "cannot reach the federation at $federation"
got=$(sha256sum "$work/root-cert.pem" | cut -d' ' -f1)
[ "$got" = "$pin" ] || die "the federation at $federation is not the one this join string was made for: its root's SHA-256 is $got, the join string pins $pin. Nothing was sent or installed. (A CA rotation since the string was made also changes the root: create a new join string.)"

# 2. What the federation serves, over TLS verified by that root from now on.
get "$federation/join/info" "$work/info.json" || die "$federation/join/info failed"
version=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$work/info.json")
[ -n "$version" ] || die "$federation/join/info names no version: is this a Kedge federation?"
if [ "$tarball" = 0 ] && command -v dpkg >/dev/null 2>&1; then pkg="kedge_${version}_amd64.deb"; else pkg="kedge_${version}_linux_amd64.tar.gz"; fi
grep -q "\"$pkg\"" "$work/info.json" || die "the federation (version $version) serves no $pkg; copy the packages of version $version into its packageDir"
[ "$(uname -m)" = x86_64 ] || die "the package is for x86_64; this host is $(uname -m)"

# 3. Download and install.
echo "join.sh: downloading $pkg from $federation"
get "$federation/join/packages/$pkg" "$work/$pkg" || die "downloading $pkg failed (disk full?)"
case "$pkg" in
  *.deb)
    if [ -n "$root" ]; then
      mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
      [ -f "$root/var/lib/dpkg/status" ] || : > "$root/var/lib/dpkg/status"
      dpkg --root="$root" --force-script-chrootless --force-depends --log=/dev/null -i "$work/$pkg" >/dev/null || die "dpkg could not install $pkg into $root"
    else
      dpkg -i "$work/$pkg" >/dev/null || die "dpkg could not install $pkg (see its messages above)"
    fi
    ;;
  *)
    # Unpacked beside the final place, then swapped in with renames: a full
    # disk or an interrupted download leaves the previous install as it was.
    stage="$target/opt/.kedge-new.$$"
    rm -rf "$stage"; mkdir -p "$stage"
    if ! tar -xzf "$work/$pkg" -C "$stage"; then rm -rf "$stage"; die "unpacking $pkg failed (disk full?); nothing was changed"; fi
    mkdir -p "$target/opt" "$target/usr/bin" "$target/lib/systemd/system" "$target/etc/kedge"
    [ -d "$target/opt/kedge" ] && mv "$target/opt/kedge" "$target/opt/.kedge-old.$$"
    mv "$stage/opt/kedge" "$target/opt/kedge"
    rm -rf "$target/opt/.kedge-old.$$"
    cp "$stage/lib/systemd/system/"*.service "$target/lib/systemd/system/"
    [ -f "$target/etc/kedge/federation.yaml" ] || cp "$stage/etc/kedge/federation.yaml" "$target/etc/kedge/"
    ln -sf /opt/kedge/bin/kedge "$target/usr/bin/kedge"
    rm -rf "$stage"
    if ! grep -q '^kedge:' "$target/etc/passwd" 2>/dev/null; then
      if [ -n "$root" ]; then useradd --prefix "$root" --system --user-group --home-dir /var/lib/kedge --no-create-home --shell /usr/sbin/nologin kedge
      else useradd --system --user-group --home-dir /var/lib/kedge --no-create-home --shell /usr/sbin/nologin kedge; fi
    fi
    ;;
esac

# 4. Configure: kedge join checks the string (and the root against it again),
# writes the config, root and token.
kedge="$target/opt/kedge/bin/kedge"
set -- join --root-cert "$work/root-cert.pem"
[ -n "$root" ] && set -- "$@" --root "$root"
[ "$capture" = 0 ] && set -- "$@" --no-capture
[ -n "$name" ] && set -- "$@" --name "$name"
[ -n "$address" ] && set -- "$@" --address "$address"
"$kedge" "$@" "$join" || exit 1

# 5. Start.
if [ "$start" = 1 ] && [ -z "$root" ]; then
  systemctl daemon-reload
  systemctl enable --now kedge-agent.service
  echo "join.sh: kedge-agent is running; follow it with: journalctl -u kedge-agent -f"
else
  echo "join.sh: installed into $target; start it with: systemctl enable --now kedge-agent"
fi
