#!/usr/bin/env bash
# Cone/cone iroh-manual punch with a given router fix; prints peerport's view and both routers' UDP conntrack.
#   PPLAB_FIX=none|input|mangle ./pitfall-demo.sh
set -uo pipefail
L=$(cd "$(dirname "$0")" && pwd); PP=${PEERPORT_BIN:-$L/../../target/release/peerport}; D=$(mktemp -d)
trap '$L/netlab.sh down; rm -rf "$D"' EXIT
$L/netlab.sh up cone cone >/dev/null || exit 1
cd "$D"; touch F G
ip netns exec pplab-inet "$PP" rendezvous --bind 198.18.0.1 > rdv.out 2>/dev/null &
for _ in $(seq 50); do grep -q '^stun-server' rdv.out && break; sleep 0.1; done
STUN=$(awk '/^stun-server/{print $2}' rdv.out)
C=(--offer-file F --answer-file G --stun-server "$STUN" --no-portmap)
ip netns exec pplab-a-host timeout 30 "$PP" sender iroh-manual --source tcp://127.0.0.1:22 "${C[@]}" 2> s.err &
sleep 0.3
ip netns exec pplab-b-host timeout 30 "$PP" receiver iroh-manual --target tcp://127.0.0.1:2222 --connect-timeout 8 "${C[@]}" 2> r.err &
sleep 6
echo "PPLAB_FIX=${PPLAB_FIX:-input}"; grep -h -E "endpoint ready|established" s.err r.err | sed 's/^.*INFO *//'
for r in a b; do echo "== $r-rtr conntrack"; ip netns exec pplab-$r-rtr conntrack -L -p udp 2>/dev/null; done
