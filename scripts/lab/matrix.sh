#!/usr/bin/env bash
# Run peerport through every mode x NAT pair in the namespace lab.
#   matrix.sh [--quick] [--modes "iroh ice"] [--pairs "cone/cone cgnat/cone"] [--out NAME]
# --quick: cone/cone and symmetric/symmetric, ssh only.
# Pair notation SENDER_NAT/RECEIVER_NAT (sender in site a, receiver in site b).
# Modes: iroh iroh-manual ice nostr, and ice@coturn nostr@coturn: the same modes with coturn
# (Debian package coturn, started in the lab's internet namespace with long-term credentials
# and a realm) as their STUN/TURN server instead of the embedded one.
# Output: NAME.md, NAME.json (default NAME=results); per-case logs in runs/NAME/MODE-SNAT-RNAT/.
set -euo pipefail

LAB=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$LAB/../.." && pwd)
PP=${PEERPORT_BIN:-$ROOT/target/release/peerport}
NETLAB=$LAB/netlab.sh
OUTDIR=${PEERPORT_LAB_OUT:-$ROOT/target/lab}
UPDATE_README=0
if [[ $(id -u) != 0 ]]; then
  echo "SKIPPED: the NAT lab needs root (network namespaces, iptables); CI runs it as root" >&2
  exit 0
fi
[[ -x $PP ]] || { echo "error: $PP missing: run cargo build --release first" >&2; exit 1; }
# Can this machine build the lab at all (namespaces, veth, iptables inside a namespace)?
preflight() {
  ip netns add pplab-preflight || return 1
  ip -n pplab-preflight link add pf0 type veth peer name pf1 || return 1
  ip netns exec pplab-preflight iptables -w 5 -t nat -A POSTROUTING -o pf0 -j MASQUERADE || return 1
}
if ! preflight >/dev/null 2>&1; then
  ip netns del pplab-preflight 2>/dev/null || true
  echo "SKIPPED: this machine cannot create network namespaces, veth pairs or iptables rules (container without CAP_NET_ADMIN?)" >&2
  exit 0
fi
ip netns del pplab-preflight
MODES="iroh iroh-manual ice ice@coturn nostr nostr@coturn"
COTURN_BIN=$(command -v turnserver || echo /usr/bin/turnserver)
PAIRS="cone/cone cone/symmetric symmetric/symmetric cgnat/cone cgnat/cgnat udpblocked/cone"
QUICK=0
OUT=results
CONNECT_TIMEOUT=20     # receiver --connect-timeout (s)
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1; PAIRS="cone/cone symmetric/symmetric" ;;
    --modes) MODES=$2; shift ;;
    --pairs) PAIRS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --update-readme) UPDATE_README=1 ;;
    *) echo "usage: $0 [--quick] [--modes LIST] [--pairs LIST] [--out NAME]" >&2; exit 2 ;;
  esac
  shift
done
[[ $QUICK == 1 ]] && TUNNELS="ssh" || TUNNELS="ssh tcp5201 udp5201"

TMP=$(mktemp -d /tmp/pplab.XXXXXX)
trap '$NETLAB down >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
mkdir -p "$OUTDIR/runs" /run/sshd
S=pplab-a-host R=pplab-b-host
log() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }

# ---- one-time material: ssh keys, sshd config, nostr keys ---------------------------------
ssh-keygen -q -t ed25519 -N '' -f "$TMP/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$TMP/userkey"
cp "$TMP/userkey.pub" "$TMP/authorized_keys"
cat > "$TMP/sshd_config" <<EOF
ListenAddress 127.0.0.1:22
HostKey $TMP/hostkey
PidFile none
PermitRootLogin yes
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile $TMP/authorized_keys
StrictModes no
UsePAM no
EOF
for t in ssh tcp5201 udp5201; do
  for side in s r; do
    "$PP" generate-nostr-key --output "$TMP/$side-$t.nsec" 2>/dev/null | grep -o 'npub1[a-z0-9]*' > "$TMP/$side-$t.npub"
  done
done

# tunnel name -> sender source / receiver target
src_of() { case $1 in ssh) echo tcp://127.0.0.1:22 ;; tcp5201) echo tcp://127.0.0.1:5201 ;; udp5201) echo udp://127.0.0.1:5201 ;; esac; }
tgt_of() { case $1 in ssh) echo tcp://127.0.0.1:2222 ;; tcp5201) echo tcp://127.0.0.1:5201 ;; udp5201) echo udp://127.0.0.1:5201 ;; esac; }

wait_for() {  # wait_for SECONDS FILE REGEX: bounded poll
  local end=$(( SECONDS + $1 ))
  while (( SECONDS < end )); do grep -qE "$3" "$2" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# ---- start one sender/receiver pair (in the background) ------------------------------------
start_pair() {
  local mode=${1%@*} t=$2 dir=$3 common=() scommon=() rcommon=()
  case $mode in
    iroh) common=(--relay-url "$RELAY" --relay-quic-port "$RELAY_QUIC" --relay-ca "$RELAY_CA"
              --dns-server "$DNS" --no-mdns --no-portmap) ;;
    iroh-manual) : > "$dir/$t.offer"; : > "$dir/$t.answer"
      common=(--offer-file "$dir/$t.offer" --answer-file "$dir/$t.answer" --stun-server "$STUN" --no-portmap) ;;
    ice) : > "$dir/$t.offer"; : > "$dir/$t.answer"
      common=(--offer-file "$dir/$t.offer" --answer-file "$dir/$t.answer" --stun-server "$STUN" --no-portmap
              --turn-server "$TURN" --turn-user "$TURN_USER" --turn-password-file "$TMP/turnpw") ;;
    nostr) common=(--relay "$NOSTR" --stun-server "$STUN" --no-portmap
              --turn-server "$TURN" --turn-user "$TURN_USER" --turn-password-file "$TMP/turnpw")
      scommon=(--nsec-file "$TMP/s-$t.nsec" --peer-npub "$(cat "$TMP/r-$t.npub")")
      rcommon=(--nsec-file "$TMP/r-$t.nsec" --peer-npub "$(cat "$TMP/s-$t.npub")") ;;
  esac
  ip netns exec $S "$PP" sender "$mode" --source "$(src_of "$t")" "${common[@]}" "${scommon[@]}" \
    > "$dir/$t.sender.out" 2> "$dir/$t.sender.log" &
  if [[ $mode == iroh ]]; then
    wait_for 20 "$dir/$t.sender.out" '^ppt1' || { log "no ticket from $t sender"; return 0; }
    rcommon=(--node-id "$(grep -m1 '^ppt1' "$dir/$t.sender.out")")
  else
    sleep 0.3
  fi
  now > "$dir/$t.t0"
  ip netns exec $R "$PP" receiver "$mode" --target "$(tgt_of "$t")" --connect-timeout $CONNECT_TIMEOUT \
    "${common[@]}" "${rcommon[@]}" > "$dir/$t.receiver.out" 2> "$dir/$t.receiver.log" &
  echo $! > "$dir/$t.rpid"
}

# wait until the receiver logs "session established" or exits; bounded
await_pair() {
  local dir=$1 t=$2 end=$(( SECONDS + CONNECT_TIMEOUT + 15 )) pid
  pid=$(cat "$dir/$t.rpid" 2>/dev/null) || return 1
  while (( SECONDS < end )); do
    grep -q 'session established' "$dir/$t.receiver.log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

est_line() { { grep -m1 'session established' "$1" 2>/dev/null || true; } | sed -E 's/.*path=//; s/ ms=[0-9]+$//'; }
setup_secs() {  # receiver start -> "session established" log timestamp
  local ts; ts=$(grep -m1 'session established' "$1" 2>/dev/null | awk '{print $1}' || true)
  [[ -n $ts ]] && awk -v a="$(date -d "$ts" +%s.%N)" -v b="$(cat "$2")" 'BEGIN{printf "%.2f", a-b}'
}

iperf() {  # iperf DIR NAME ARGS...: one-shot server in S, client in R, JSON to DIR/NAME.json
  local dir=$1 name=$2; shift 2
  ip netns exec $S timeout 25 iperf3 -s -1 -p 5201 > "$dir/$name.server" 2>&1 & local spid=$!
  sleep 0.3
  ip netns exec $R timeout 20 iperf3 -c 127.0.0.1 -p 5201 -t 3 -J "$@" > "$dir/$name.json" 2>&1 || true
  kill $spid 2>/dev/null || true; wait $spid 2>/dev/null || true
}

# coturn in the internet namespace: long-term credentials, a realm, relay ports on 198.18.0.1
COTURN_PORT=3490
start_coturn() {
  local dir=$1
  [[ -x $COTURN_BIN ]] || { log "coturn (turnserver) is not installed: apt-get install coturn"; return 1; }
  COTURN_PW=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
  ip netns exec pplab-inet "$COTURN_BIN" -n --listening-ip 198.18.0.1 --relay-ip 198.18.0.1 \
    --listening-port $COTURN_PORT --min-port 49152 --max-port 65535 --lt-cred-mech \
    --user "peerport:$COTURN_PW" --realm peerport.lab --no-tls --no-dtls --no-tcp-relay --no-cli \
    --verbose --log-file stdout --simple-log --pidfile "$dir/coturn.pid" --userdb "$dir/coturn.db" \
    > "$dir/coturn.log" 2>&1 &
  wait_for 10 "$dir/coturn.log" 'Total (General|UDP) servers|IPv4. UDP listener opened|listener opened on' || true
  sleep 0.3
}

# ---- one case ----------------------------------------------------------------------------
run_case() {
  local mode=$1 sn=${2%/*} rn=${2#*/} t
  local dir=$OUTDIR/runs/$OUT/${mode/@/-}-$sn-$rn
  rm -rf "$dir"; mkdir -p "$dir"
  log "== $mode  sender=$sn receiver=$rn"
  $NETLAB down >/dev/null 2>&1 || true
  $NETLAB up "$sn" "$rn" > "$dir/netlab.log" 2>&1 || { log "lab up failed"; cat "$dir/netlab.log" >&2; return 0; }
  ip netns exec pplab-inet "$PP" rendezvous --bind 198.18.0.1 > "$dir/rendezvous.out" 2> "$dir/rendezvous.log" &
  wait_for 15 "$dir/rendezvous.out" '^turn-server' || { log "rendezvous did not start"; return 0; }
  local rv=$dir/rendezvous.out
  RELAY=$(awk '/^relay-url/{print $2}' "$rv"); DNS=$(awk '/^dns-server/{print $2}' "$rv")
  RELAY_QUIC=$(awk '/^relay-quic-port/{print $2}' "$rv"); RELAY_CA=$(awk '/^relay-ca/{print $2}' "$rv")
  STUN=$(awk '/^stun-server/{print $2}' "$rv"); NOSTR=$(awk '/^nostr-relay/{print $2}' "$rv")
  TURN=$(awk '/^turn-server/{print $2}' "$rv"); TURN_USER=$(awk '/^turn-server/{print $4}' "$rv")
  awk '/^turn-server/{print $6}' "$rv" > "$TMP/turnpw"; chmod 600 "$TMP/turnpw"
  if [[ $mode == *@coturn ]]; then
    start_coturn "$dir" || { log "coturn did not start"; return 0; }
    STUN=198.18.0.1:$COTURN_PORT TURN=turn:198.18.0.1:$COTURN_PORT TURN_USER=peerport
    echo "$COTURN_PW" > "$TMP/turnpw"
  fi
  for s in a b; do
    [[ $( [[ $s == a ]] && echo "$sn" || echo "$rn") == udpblocked ]] && $NETLAB allow-udp $s "${TURN#turn:}"
  done
  ip netns exec pplab-inet "$PP" rendezvous --bind 198.18.0.1 > "$dir/rendezvous2.out" 2>/dev/null &
  wait_for 15 "$dir/rendezvous2.out" '^stun-server' || true
  STUN2=$(awk '/^stun-server/{print $2}' "$dir/rendezvous2.out")
  local nc_a nc_b
  local nc=(netcheck --json --stun-server "$STUN" --stun-server "$STUN2" --relay-url "$RELAY" --relay-quic-port "$RELAY_QUIC" --relay-ca "$RELAY_CA")
  ip netns exec $S timeout 30 "$PP" "${nc[@]}" > "$dir/netcheck-sender.json" 2>/dev/null || true
  ip netns exec $R timeout 30 "$PP" "${nc[@]}" > "$dir/netcheck-receiver.json" 2>/dev/null || true
  # mapping type, and whether the relay's QUIC address discovery answered (q+ / q-)
  nc_a=$(jq -r '.mapping + (if .relay_qad[0].ok then " q+" else " q-" end)' "$dir/netcheck-sender.json" 2>/dev/null || echo error)
  nc_b=$(jq -r '.mapping + (if .relay_qad[0].ok then " q+" else " q-" end)' "$dir/netcheck-receiver.json" 2>/dev/null || echo error)
  ip netns exec $S /usr/sbin/sshd -D -e -f "$TMP/sshd_config" > "$dir/sshd.log" 2>&1 &

  for t in $TUNNELS; do start_pair "$mode" "$t" "$dir"; done
  declare -A ok
  for t in $TUNNELS; do await_pair "$dir" "$t" && ok[$t]=1 || ok[$t]=0; done
  [[ $mode == iroh && ${ok[ssh]} == 1 ]] && sleep 3   # give iroh a moment to upgrade relay -> direct

  local ssh_ok=no tcp="" udp="" loss=""
  if [[ ${ok[ssh]} == 1 ]]; then
    local out
    out=$(ip netns exec $R timeout 20 ssh -p 2222 -i "$TMP/userkey" -o StrictHostKeyChecking=no \
      -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=10 root@127.0.0.1 echo ok 2> "$dir/ssh.err") || true
    [[ $out == ok ]] && ssh_ok=yes
  fi
  if [[ $QUICK == 0 && ${ok[tcp5201]} == 1 ]]; then
    iperf "$dir" iperf-tcp
    tcp=$(jq -r '.end.sum_received.bits_per_second // empty | ./1e6 | floor' "$dir/iperf-tcp.json" 2>/dev/null || true)
  fi
  if [[ $QUICK == 0 && ${ok[tcp5201]} == 1 && ${ok[udp5201]} == 1 ]]; then
    iperf "$dir" iperf-udp -u -b 50M
    udp=$(jq -r '(.end.sum_received // .end.sum).bits_per_second // empty | ./1e6 | .*10 | floor | ./10' "$dir/iperf-udp.json" 2>/dev/null || true)
    loss=$(jq -r '(.end.sum_received // .end.sum).lost_percent // empty | .*10 | floor | ./10' "$dir/iperf-udp.json" 2>/dev/null || true)
  fi

  local rl=$dir/ssh.receiver.log path final err setup
  path=$(est_line "$rl")
  final=$(grep 'path selected' "$rl" 2>/dev/null | tail -1 | sed -E 's/.*path selected:? *//' || true)
  setup=$(setup_secs "$rl" "$dir/ssh.t0" || true)
  err=$(grep -h -m1 '^error:' "$rl" 2>/dev/null || true)
  [[ -z $err && ${ok[ssh]} == 0 ]] && err=$(grep -h -m1 -E 'ERROR|error' "$rl" "$dir/ssh.sender.log" 2>/dev/null | head -1 || true)
  local others=""
  for t in $TUNNELS; do [[ $t != ssh ]] && others+="$t:$( [[ ${ok[$t]} == 1 ]] && est_line "$dir/$t.receiver.log" || echo "FAILED $(grep -m1 '^error:' "$dir/$t.receiver.log" 2>/dev/null)"); "; done
  jq -n --arg mode "$mode" --arg sn "$sn" --arg rn "$rn" --arg conn "$( ((ok[ssh])) && echo yes || echo no)" \
    --arg path "$path" --arg final "$final" --arg setup "$setup" --arg ssh "$ssh_ok" \
    --arg tcp "$tcp" --arg udp "$udp" --arg loss "$loss" --arg err "$err" --arg others "$others" --arg nca "$nc_a" --arg ncb "$nc_b" \
    '{mode:$mode, sender_nat:$sn, receiver_nat:$rn, connected:$conn, path:$path, final_path:$final,
      setup_s:$setup, ssh:$ssh, tcp_mbps:$tcp, udp_mbps:$udp, udp_loss_pct:$loss, error:$err, other_tunnels:$others, netcheck_sender:$nca, netcheck_receiver:$ncb}' \
    > "$dir/result.json"
  log "   connected=$( ((ok[ssh])) && echo yes || echo no) ssh=$ssh_ok path='$path' final='$final' setup=${setup}s tcp=${tcp} udp=${udp} loss=${loss}% ${err}"
  $NETLAB down >/dev/null 2>&1 || true
}

# ---- expectations: what the design says must work ----------------------------------------
# jq program over an array of results: one line per violated expectation
EXPECT='
  def nat_ok(n; m): (n=="cone" and m=="endpoint-independent q+") or (n=="cgnat" and m=="endpoint-independent q+")
      or (n=="symmetric" and m=="endpoint-dependent q+") or (n=="udpblocked" and m=="unknown q-");
  def cone(n): n=="cone" or n=="cgnat";
  .[] | (.mode|split("@")[0]) as $m |
  (if ($m=="ice" or $m=="nostr" or $m=="iroh") and .connected!="yes"
     then "\(.mode) \(.sender_nat)/\(.receiver_nat): must connect (relay fallback) but did not: \(.error)" else empty end),
  (if $m=="iroh-manual" and cone(.sender_nat) and cone(.receiver_nat) and .connected!="yes"
     then "iroh-manual \(.sender_nat)/\(.receiver_nat): must connect directly but did not: \(.error)" else empty end),
  (if ($m=="ice" or $m=="nostr" or $m=="iroh-manual") and cone(.sender_nat) and cone(.receiver_nat) and (.path|startswith("direct")|not)
     then "\(.mode) \(.sender_nat)/\(.receiver_nat): expected a direct path, got \(.path)" else empty end),
  (if $m=="iroh" and cone(.sender_nat) and cone(.receiver_nat) and (.final_path|startswith("direct")|not)
     then "iroh \(.sender_nat)/\(.receiver_nat): expected the relay path to upgrade to direct, final path: \(.final_path)" else empty end),
  (if .connected=="yes" and .ssh!="yes" then "\(.mode) \(.sender_nat)/\(.receiver_nat): connected but ssh failed" else empty end),
  (if nat_ok(.sender_nat; .netcheck_sender)|not then "netcheck in a \(.sender_nat) site said \(.netcheck_sender)" else empty end),
  (if nat_ok(.receiver_nat; .netcheck_receiver)|not then "netcheck in a \(.receiver_nat) site said \(.netcheck_receiver)" else empty end)
'

START=$SECONDS
CASES=()
for mode in $MODES; do for pair in $PAIRS; do
  res=$OUTDIR/runs/$OUT/${mode/@/-}-${pair%/*}-${pair#*/}/result.json
  run_case "$mode" "$pair"
  # one retry for a case that misses its expectation (a busy machine can
  # stretch a timeout); the second result is the one reported
  if [[ -n $(jq -s "$EXPECT" "$res" 2>/dev/null || echo unreadable) ]]; then
    log "   expectation missed; running the case once more"
    run_case "$mode" "$pair"
  fi
  CASES+=("$res")
done; done

jq -s . "${CASES[@]}" > "$OUTDIR/$OUT.json"
{
  echo "**peerport NAT lab results ($(date -u +%F\ %TZ), $((SECONDS-START)) s$( ((QUICK)) && echo ', --quick'))**"
  echo
  echo "Pair = sender NAT / receiver NAT. Path = receiver's \`session established\` line (final = last \`path selected\`). netcheck = NAT mapping each site's \`peerport netcheck\` found, q+/q- = whether the relay's QUIC address discovery answered it."
  echo
  echo "| mode | sender/receiver NAT | netcheck sender/receiver | connected | path | setup | ssh | TCP Mbit/s | UDP Mbit/s | UDP loss | error |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  jq -r '.[] | "| \(.mode) | \(.sender_nat)/\(.receiver_nat) | \(.netcheck_sender)/\(.netcheck_receiver) | \(.connected) | \(.path)\(if .final_path=="" then "" else " -> "+.final_path end) | \(if .setup_s=="" then "" else .setup_s+" s" end) | \(.ssh) | \(.tcp_mbps) | \(.udp_mbps) | \(if .udp_loss_pct=="" then "" else .udp_loss_pct+" %" end) | \(.error|gsub("\\|";"/")) |"' "$OUTDIR/$OUT.json"
} > "$OUTDIR/$OUT.md"
cat "$OUTDIR/$OUT.md"

FAIL=$(jq -r "$EXPECT" "$OUTDIR/$OUT.json" | sort -u)

if (( UPDATE_README )); then
  python3 - "$ROOT/README.md" "$OUTDIR/$OUT.md" <<'PY'
import sys
readme, table = sys.argv[1], open(sys.argv[2]).read()
s = open(readme).read()
a, b = "<!-- lab:begin -->", "<!-- lab:end -->"
i, j = s.index(a) + len(a), s.index(b)
open(readme, "w").write(s[:i] + "\n" + table + s[j:])
PY
  echo "README table updated from $OUTDIR/$OUT.md" >&2
fi

if [[ -n $FAIL ]]; then
  echo "lab expectations violated:" >&2
  echo "$FAIL" >&2
  exit 1
fi
echo "lab expectations met" >&2
