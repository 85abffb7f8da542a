#!/usr/bin/env bash
# Run peerport through every mode x NAT pair in the namespace lab.
#   matrix.sh [--quick] [--modes "iroh ice"] [--pairs "cone/cone cgnat/cone"] [--out NAME]
# --quick: cone/cone and symmetric/symmetric, ssh only.
# Pair notation SENDER_NAT/RECEIVER_NAT (sender in site a, receiver in site b).
# Modes: iroh iroh-manual ice nostr, and ice@coturn nostr@coturn: the same modes with coturn
# (Debian package coturn, started in the lab's internet namespace with long-term credentials
# and a realm) as their STUN/TURN server instead of the embedded one; nostr@noturn (or
# ice@noturn): no TURN server at all.
# Output: NAME.md, NAME.json (default NAME=results); per-case logs in runs/NAME/MODE-SNAT-RNAT/.
set -euo pipefail

UPDATE_README=0
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
lab_preflight
MODES="iroh iroh-manual ice ice@coturn nostr nostr@coturn"
PAIRS="cone/cone cone/symmetric symmetric/cone symseq/cone cone/symseq symmetric/symmetric cgnat/cone cgnat/cgnat udpblocked/cone"
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

lab_init

# ---- one case ----------------------------------------------------------------------------
run_case() {
  local mode=$1 sn=${2%/*} rn=${2#*/} t
  local dir=$OUTDIR/runs/$OUT/${mode/@/-}-$sn-$rn
  rm -rf "$dir"; mkdir -p "$dir"
  log "== $mode  sender=$sn receiver=$rn"
  $NETLAB down >/dev/null 2>&1 || true
  $NETLAB up "$sn" "$rn" > "$dir/netlab.log" 2>&1 || { log "lab up failed"; cat "$dir/netlab.log" >&2; return 0; }
  start_rendezvous "$dir" || return 0
  if [[ $mode == *@coturn ]]; then
    use_coturn "$dir" || { log "coturn did not start"; return 0; }
  fi
  for s in a b; do
    [[ $( [[ $s == a ]] && echo "$sn" || echo "$rn") == udpblocked ]] && $NETLAB allow-udp $s "${TURN#turn:}"
  done
  ip netns exec $PPLAB-inet "$PP" rendezvous --bind 198.18.0.1 > "$dir/rendezvous2.out" 2>/dev/null &
  wait_for 15 "$dir/rendezvous2.out" '^stun-server' || true
  STUN2=$(awk '/^stun-server/{print $2}' "$dir/rendezvous2.out")
  local nc_a nc_b
  local nc=(netcheck --json --stun-server "$STUN" --stun-server "$STUN2" --relay-url "$RELAY" --relay-quic-port "$RELAY_QUIC" --relay-ca "$RELAY_CA")
  ip netns exec $S timeout 30 "$PP" "${nc[@]}" > "$dir/netcheck-sender.json" 2>/dev/null || true
  ip netns exec $R timeout 30 "$PP" "${nc[@]}" > "$dir/netcheck-receiver.json" 2>/dev/null || true
  # mapping type, port allocation, and whether the relay's QUIC address discovery answered (q+ / q-)
  local ncq='.mapping + " " + .port_allocation.kind + (if .relay_qad[0].ok then " q+" else " q-" end)'
  nc_a=$(jq -r "$ncq" "$dir/netcheck-sender.json" 2>/dev/null || echo error)
  nc_b=$(jq -r "$ncq" "$dir/netcheck-receiver.json" 2>/dev/null || echo error)
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
  def nat_ok(n; m): (n=="cone" and m=="endpoint-independent preserving q+") or (n=="cgnat" and m=="endpoint-independent preserving q+")
      or (n=="symmetric" and m=="endpoint-dependent random q+") or (n=="symseq" and m=="endpoint-dependent sequential q+")
      or (n=="udpblocked" and m=="unknown preserving q-");
  def cone(n): n=="cone" or n=="cgnat";
  def hard(n): n=="symmetric" or n=="symseq";
  def direct: (.path|startswith("direct")) or (.final_path|startswith("direct"));
  .[] | (.mode|split("@")[0]) as $m |
  (if ($m=="ice" or $m=="nostr" or $m=="iroh") and .connected!="yes"
     then "\(.mode) \(.sender_nat)/\(.receiver_nat): must connect (relay fallback) but did not: \(.error)" else empty end),
  (if $m=="iroh-manual" and cone(.sender_nat) and cone(.receiver_nat) and .connected!="yes"
     then "iroh-manual \(.sender_nat)/\(.receiver_nat): must connect directly but did not: \(.error)" else empty end),
  (if ($m=="ice" or $m=="nostr" or $m=="iroh-manual") and cone(.sender_nat) and cone(.receiver_nat) and (.path|startswith("direct")|not)
     then "\(.mode) \(.sender_nat)/\(.receiver_nat): expected a direct path, got \(.path)" else empty end),
  (if ($m=="ice" or $m=="nostr") and .connected=="yes" and ((cone(.sender_nat) and hard(.receiver_nat)) or (hard(.sender_nat) and cone(.receiver_nat))) and (direct|not)
     then "\(.mode) \(.sender_nat)/\(.receiver_nat): expected the hard-NAT punch to move the path to direct, path: \(.path), final: \(.final_path)" else empty end),
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
  run_checked "$res" "$mode" "$pair"
  CASES+=("$res")
done; done

jq -s . "${CASES[@]}" > "$OUTDIR/$OUT.json"
{
  echo "**peerport NAT lab results ($(date -u +%F\ %TZ), $((SECONDS-START)) s$( ((QUICK)) && echo ', --quick'))**"
  echo
  echo "Pair = sender NAT / receiver NAT (symseq: symmetric with sequential ports). Path = receiver's \`session established\` line (final = last \`path selected\`). netcheck = NAT mapping and port allocation each site's \`peerport netcheck\` found, q+/q- = whether the relay's QUIC address discovery answered it."
  echo
  echo "| mode | sender/receiver NAT | netcheck sender/receiver | connected | path | setup | ssh | TCP Mbit/s | UDP Mbit/s | UDP loss | error |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  jq -r '.[] | "| \(.mode) | \(.sender_nat)/\(.receiver_nat) | \(.netcheck_sender)/\(.netcheck_receiver) | \(.connected) | \(.path)\(if .final_path=="" then "" else " -> "+.final_path end) | \(if .setup_s=="" then "" else .setup_s+" s" end) | \(.ssh) | \(.tcp_mbps) | \(.udp_mbps) | \(if .udp_loss_pct=="" then "" else .udp_loss_pct+" %" end) | \(.error|gsub("\\|";"/")) |"' "$OUTDIR/$OUT.json"
} > "$OUTDIR/$OUT.md"
cat "$OUTDIR/$OUT.md"

FAIL=$(jq -r "$EXPECT" "$OUTDIR/$OUT.json" | sort -u)

if (( UPDATE_README )); then
  readme_table lab "$OUTDIR/$OUT.md"
fi

if [[ -n $FAIL ]]; then
  echo "lab expectations violated:" >&2
  echo "$FAIL" >&2
  exit 1
fi
echo "lab expectations met" >&2
