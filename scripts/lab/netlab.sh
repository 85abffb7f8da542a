#!/usr/bin/env bash
# peerport NAT lab: network namespaces only, nothing touches the root namespace.
#
#   netlab.sh up A_TYPE B_TYPE     build the lab (types: cone symmetric symseq cgnat udpblocked)
#   netlab.sh down                 remove every pplab-* namespace
#   netlab.sh exec NODE CMD...     run CMD in a node: inet | a | b (hosts) | a-rtr | b-rtr | a-cgn | b-cgn
#   netlab.sh allow-udp SITE IP:PORT   udpblocked site: let outbound UDP to IP:PORT through
#   netlab.sh probe SITE           STUN-like check: external port seen by two reflectors
#   netlab.sh status               namespaces, addresses, NAT rules
#   netlab.sh wire SITE K=V...     fault lab: set the site's wire (delay_ms jitter_ms loss rate_mbit queue_ms down)
#   netlab.sh readdr SITE IP       move the site's host to a new LAN address (10.0.{idx}.X), dropping the old one
#
# Topology (site a = idx 1, site b = idx 2):
#   pplab-inet   br0 198.18.0.1/24 (rendezvous, reflectors)
#   pplab-X-rtr  wan 198.18.0.1{idx}/24 (or 100.64.{idx}.2/24 behind pplab-X-cgn), lan 10.0.{idx}.1/24
#   pplab-X-cgn  (cgnat only) wan 198.18.0.1{idx}/24, lan 100.64.{idx}.1/24
#   pplab-X-host eth0 10.0.{idx}.2/24, default via 10.0.{idx}.1
# PPLAB_WIRE=1 (cone/symmetric sites): a namespace pplab-X-wire sits between the router's wan and
#   the internet bridge and runs `peerport-lab wire` (a userspace wire with delay, jitter, loss,
#   rate and blackouts; this kernel has no netem). Offloads are off on the links into a wire.
# PPLAB_FIX=input|mangle|none: how routers drop unsolicited inbound (none reproduces the port-remap pitfall).
set -euo pipefail

LAB_DIR=$(cd "$(dirname "$0")" && pwd)
# PPLAB_NAME: the namespaces' prefix (default pplab), so that two labs can run side by side
PPLAB=${PPLAB_NAME:-pplab}
PP=${PEERPORT_BIN:-$LAB_DIR/../../target/release/peerport}
PPLAB_TOOL=${PEERPORT_LAB_BIN:-$LAB_DIR/../../target/release/peerport-lab}
WIRE_DIR=${PPLAB_WIRE_DIR:-/run/$PPLAB-wire}
INET=$PPLAB-inet
INET_IP=198.18.0.1

die() { echo "netlab: $*" >&2; exit 1; }
nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
ipt() { local ns=$1; shift; ip netns exec "$ns" iptables -w 5 "$@"; }

node_ns() {
  case $1 in
    inet) echo $INET ;;
    a|b) echo "$PPLAB-$1-host" ;;
    a-rtr|b-rtr|a-cgn|b-cgn|a-host|b-host|a-wire|b-wire) echo "$PPLAB-$1" ;;
    $PPLAB-*) echo "$1" ;;
    *) die "unknown node '$1'" ;;
  esac
}

new_ns() {
  ip netns add "$1"
  nsx "$1" ip link set lo up
  nsx "$1" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
}

# veth pair created directly inside namespace $1 (name $2) with peer in $3 (name $4): never in root.
link() {
  ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
  ip -n "$1" link set "$2" up
  ip -n "$3" link set "$4" up
}

# symseq: a symmetric NAT that allocates sequentially, as many home routers do: each new UDP
# 5-tuple takes the next port of one counter (20000-29999, then around again). Linux's own SNAT
# picks free ports at random, so the port comes from nft's counter through a map (numgen's
# host-order number would land byte-swapped in the port). TCP is masqueraded as in a cone site.
SEQ_PORTS=10000
seq_nat() {
  local ns=$1 wan_ip f
  wan_ip=$(nsx "$ns" ip -4 -o addr show dev wan | awk '{print $4}' | cut -d/ -f1)
  f=$(mktemp)
  {
    echo "table ip $PPLAB-seq {"
    echo "  map ports { typeof numgen inc mod $SEQ_PORTS : udp sport; elements = {"
    seq 0 $((SEQ_PORTS - 1)) | awk '{printf "    %d : %d,\n", $1, 20000 + $1}'
    echo "  } }"
    echo "  chain post { type nat hook postrouting priority srcnat; policy accept;"
    echo "    oifname \"wan\" meta l4proto udp snat to $wan_ip : numgen inc mod $SEQ_PORTS map @ports"
    echo "  }"
    echo "}"
  } > "$f"
  nsx "$ns" nft -f "$f" || { rm -f "$f"; die "nft failed (install nftables)"; }
  rm -f "$f"
}

# Home-router-like NAT: masquerade out of wan, drop unsolicited inbound.
nat_rules() {
  local ns=$1 type=$2 rnd=""
  [[ $type == symmetric ]] && rnd="--random-fully"
  if [[ $type == symseq ]]; then
    seq_nat "$ns"
    ipt "$ns" -t nat -A POSTROUTING -o wan ! -p udp -j MASQUERADE
  else
    ipt "$ns" -t nat -A POSTROUTING -o wan -j MASQUERADE $rnd
  fi
  ipt "$ns" -P FORWARD DROP
  ipt "$ns" -A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
  if [[ $type == udpblocked ]]; then
    ipt "$ns" -N PPLAB-UDP
    ipt "$ns" -A PPLAB-UDP -j DROP          # allow-udp inserts ACCEPTs above this
    ipt "$ns" -A FORWARD -i lan -o wan -p udp -j PPLAB-UDP
  fi
  ipt "$ns" -A FORWARD -i lan -o wan -j ACCEPT
  # Packets from outside that match no NAT mapping are addressed to the router itself: they
  # traverse INPUT, not FORWARD. If they are accepted (or merely answered with ICMP), conntrack
  # confirms an entry for them, and the host's later outbound packet to that peer clashes with it,
  # so MASQUERADE picks a different source port: the mapping the peer learned via STUN breaks.
  # Dropping them in filter/INPUT discards the unconfirmed conntrack entry.
  # FORWARD alone (above) does not see them. PPLAB_FIX selects the variant: input (default),
  # mangle (drop NEW from wan in mangle/PREROUTING, before routing), none (reproduces the pitfall).
  case ${PPLAB_FIX:-input} in
    input) ipt "$ns" -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
           ipt "$ns" -A INPUT -i wan -j DROP ;;
    mangle) ipt "$ns" -t mangle -A PREROUTING -i wan -m conntrack --ctstate NEW -j DROP ;;
    none) ;;
    *) die "PPLAB_FIX must be input|mangle|none" ;;
  esac
}

site_up() {
  local s=$1 idx=$2 type=$3
  local host=$PPLAB-$s-host rtr=$PPLAB-$s-rtr cgn=$PPLAB-$s-cgn
  new_ns "$host"; new_ns "$rtr"
  if [[ $type == cgnat ]]; then
    new_ns "$cgn"
    link $INET "wan-$s" "$cgn" wan
    ip -n $INET link set "wan-$s" master br0
    nsx "$cgn" ip addr add "198.18.0.1$idx/24" dev wan
    nsx "$cgn" ip route add default via $INET_IP
    link "$cgn" lan "$rtr" wan
    nsx "$cgn" ip addr add "100.64.$idx.1/24" dev lan
    nsx "$cgn" ip route add "10.0.$idx.0/24" via "100.64.$idx.2"   # not needed for NAT, for clarity
    nat_rules "$cgn" cone
    nsx "$rtr" ip addr add "100.64.$idx.2/24" dev wan
    nsx "$rtr" ip route add default via "100.64.$idx.1"
    nat_rules "$rtr" cone
  elif [[ ${PPLAB_WIRE:-0} == 1 ]]; then
    local wire=$PPLAB-$s-wire dev
    new_ns "$wire"
    link $INET "wan-$s" "$wire" w-in
    ip -n $INET link set "wan-$s" master br0
    link "$wire" w-out "$rtr" wan
    # frames into a wire must be whole and checksummed: no segmentation or checksum offload
    for dev in "$INET wan-$s" "$rtr wan" "$wire w-in" "$wire w-out"; do
      set -- $dev
      nsx "$1" ethtool -K "$2" tx off tso off gso off gro off tx-udp-segmentation off >/dev/null 2>&1 \
        || die "ethtool -K failed on $2 (install ethtool)"
    done
    mkdir -p "$WIRE_DIR"; : > "$WIRE_DIR/$s.conf"
    [[ -x $PPLAB_TOOL ]] || die "$PPLAB_TOOL missing: cargo build --release --workspace"
    nsx "$wire" "$PPLAB_TOOL" wire --a w-in --b w-out --control "$WIRE_DIR/$s.conf" > "$WIRE_DIR/$s.log" 2>&1 &
    nsx "$rtr" ip addr add "198.18.0.1$idx/24" dev wan
    nsx "$rtr" ip route add default via $INET_IP
    nat_rules "$rtr" "$type"
  else
    link $INET "wan-$s" "$rtr" wan
    ip -n $INET link set "wan-$s" master br0
    nsx "$rtr" ip addr add "198.18.0.1$idx/24" dev wan
    nsx "$rtr" ip route add default via $INET_IP
    nat_rules "$rtr" "$type"
  fi
  link "$rtr" lan "$host" eth0
  nsx "$rtr" ip addr add "10.0.$idx.1/24" dev lan
  nsx "$host" ip addr add "10.0.$idx.2/24" dev eth0
  nsx "$host" ip route add default via "10.0.$idx.1"
}

cmd_down() {
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^$PPLAB-" || true); do
    # kill what still runs inside (only processes in our namespaces)
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -f "$LAB_DIR/.state"
}

cmd_up() {
  local ta=${1:-cone} tb=${2:-cone} t
  for t in "$ta" "$tb"; do
    [[ $t =~ ^(cone|symmetric|symseq|cgnat|udpblocked)$ ]] || die "NAT type must be cone|symmetric|symseq|cgnat|udpblocked, got '$t'"
  done
  ip netns list | grep -q "^$PPLAB-" && die "lab already up (run: $0 down)"
  trap 'echo "netlab: up failed, tearing down" >&2; cmd_down' ERR EXIT
  new_ns $INET
  nsx $INET ip link add br0 type bridge
  nsx $INET ip link set br0 up
  nsx $INET ip addr add $INET_IP/24 dev br0
  site_up a 1 "$ta"
  site_up b 2 "$tb"
  echo "a=$ta b=$tb" > "$LAB_DIR/.state"
  # connectivity check, bounded
  local s
  for s in a b; do
    nsx "$PPLAB-$s-host" ping -c1 -W2 $INET_IP >/dev/null || die "site $s cannot reach $INET_IP"
  done
  trap - ERR EXIT
  echo "lab up: site a=$ta (10.0.1.2), site b=$tb (10.0.2.2), internet $INET_IP"
}

cmd_allow_udp() {
  local s=$1 dst=$2 ns
  ns=$( [[ -e /run/netns/$PPLAB-$s-rtr ]] && echo "$PPLAB-$s-rtr" ) || die "no site $s"
  ipt "$ns" -L PPLAB-UDP -n >/dev/null 2>&1 || die "site $s is not udpblocked"
  ipt "$ns" -I PPLAB-UDP 1 -p udp -d "${dst%:*}" --dport "${dst##*:}" -j ACCEPT
}

# Start two UDP reflectors in inet, send from one socket in the site host to both, compare ports.
cmd_probe() {
  local s=$1 pid out
  ip netns exec $INET python3 "$LAB_DIR/reflector.py" serve $INET_IP 3478 3479 & pid=$!
  sleep 0.5
  out=$(nsx "$PPLAB-$s-host" timeout 10 python3 "$LAB_DIR/reflector.py" probe $INET_IP 3478 3479) || true
  kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
  echo "site $s: $out"
}

# wire SITE K=V...: replace the site's wire settings (the wire re-reads its file within 50 ms)
cmd_wire() {
  local s=$1; shift
  [[ -e /run/netns/$PPLAB-$s-wire ]] || die "site $s has no wire (PPLAB_WIRE=1 netlab.sh up ...)"
  printf '%s\n' "$@" > "$WIRE_DIR/$s.conf.new" && mv "$WIRE_DIR/$s.conf.new" "$WIRE_DIR/$s.conf"
  sleep 0.2
}

# readdr SITE IP: the host gets a new LAN address and loses the old one (a DHCP renumbering)
cmd_readdr() {
  local s=$1 ip=$2 host=$PPLAB-$1-host old gw
  old=$(nsx "$host" ip -4 -o addr show dev eth0 | awk '{print $4}' | head -1)
  gw=$(nsx "$host" ip route show default | awk '{print $3}')
  # the new address is a secondary one: keep it when the primary goes
  nsx "$host" sysctl -qw net.ipv4.conf.eth0.promote_secondaries=1
  nsx "$host" ip addr add "$ip/24" dev eth0
  nsx "$host" ip addr del "$old" dev eth0
  nsx "$host" ip route replace default via "$gw" src "$ip"
  echo "site $s host: $old -> $ip/24"
}

cmd_status() {
  cat "$LAB_DIR/.state" 2>/dev/null || echo "(no state)"
  local ns
  for ns in $(ip netns list | awk '{print $1}' | grep "^$PPLAB-" | sort); do
    echo "== $ns"; nsx "$ns" ip -4 -br addr | grep -v '^lo'
    [[ $ns == *-rtr || $ns == *-cgn ]] && nsx "$ns" iptables -w 5 -S && nsx "$ns" iptables -w 5 -t nat -S POSTROUTING \
      && { nsx "$ns" nft list chain ip "$PPLAB-seq" post 2>/dev/null || true; }
  done
}

case ${1:-} in
  up) shift; cmd_up "$@" ;;
  down) cmd_down ;;
  exec) shift; [[ $# -ge 2 ]] || die "usage: exec NODE CMD..."; ns=$(node_ns "$1"); shift; exec ip netns exec "$ns" "$@" ;;
  allow-udp) [[ $# -eq 3 ]] || die "usage: allow-udp SITE IP:PORT"; cmd_allow_udp "$2" "$3" ;;
  probe) cmd_probe "${2:?site}" ;;
  status) cmd_status ;;
  wire) [[ $# -ge 2 ]] || die "usage: wire SITE K=V..."; shift; cmd_wire "$@" ;;
  readdr) [[ $# -eq 3 ]] || die "usage: readdr SITE IP"; cmd_readdr "$2" "$3" ;;
  *) sed -n '2,10p' "$0"; exit 2 ;;
esac
