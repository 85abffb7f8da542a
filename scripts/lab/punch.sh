#!/usr/bin/env bash
# How often, and how fast, the ice and nostr modes go direct through one symmetric NAT
# (issue 27's hard-NAT punch): RUNS sessions per mode x pair, each a fresh sender/receiver
# pair on a fresh lab, with the embedded TURN relay as the fallback (MODE@noturn: none).
#   punch.sh [--runs 20] [--modes "ice nostr nostr@noturn"] [--pairs "cone/symmetric ..."] [--out NAME] [--update-readme]
# Per run: the receiver's time from start to its path being direct (or none within
# 10 s), then an ssh command through the tunnel (the moved path carries data).
# Output: NAME.md (a row per mode x pair: connected n/N, direct n/N, median and worst time to
# direct, ssh after the move), NAME.json (every run); logs in runs/NAME/MODE-SNAT-RNAT-I/.
# --update-readme: the table goes into README.md between <!-- punch:begin --> and <!-- punch:end -->.
set -euo pipefail

source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
lab_preflight
RUNS=20
MODES="ice nostr nostr@noturn"
PAIRS="cone/symmetric symmetric/cone symseq/cone cone/symseq"
OUT=punch
UPDATE_README=0
CONNECT_TIMEOUT=20
DIRECT_WAIT=10   # seconds after the receiver starts
while [[ $# -gt 0 ]]; do
  case $1 in
    --runs) RUNS=$2; shift ;;
    --modes) MODES=$2; shift ;;
    --pairs) PAIRS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --update-readme) UPDATE_README=1 ;;
    *) echo "usage: $0 [--runs N] [--modes LIST] [--pairs LIST] [--out NAME] [--update-readme]" >&2; exit 2 ;;
  esac
  shift
done
lab_init

# direct_secs LOG T0: seconds from T0 to the first line that says the path is direct (the
# session may start on it when the punch finished first), or empty
direct_secs() {
  local ts; ts=$(grep -m1 -E 'path selected: direct|session established path=direct' "$1" 2>/dev/null | awk '{print $1}' || true)
  [[ -n $ts ]] && awk -v a="$(date -d "$ts" +%s.%N)" -v b="$(cat "$2")" 'BEGIN{printf "%.2f", a-b}'
}

run_one() {  # run_one MODE PAIR I -> result.json in its dir
  local mode=$1 sn=${2%/*} rn=${2#*/} i=$3
  local dir=$OUTDIR/runs/$OUT/$mode-$sn-$rn-$i
  rm -rf "$dir"; mkdir -p "$dir"
  $NETLAB down >/dev/null 2>&1 || true
  $NETLAB up "$sn" "$rn" > "$dir/netlab.log" 2>&1 || { log "lab up failed"; return 0; }
  start_rendezvous "$dir" || return 0
  ip netns exec $PPLAB-inet "$PP" rendezvous --bind 198.18.0.1 > "$dir/rendezvous2.out" 2>/dev/null &
  wait_for 15 "$dir/rendezvous2.out" '^stun-server' || true
  STUN2=$(awk '/^stun-server/{print $2}' "$dir/rendezvous2.out")
  ip netns exec $S /usr/sbin/sshd -D -e -f "$TMP/sshd_config" > "$dir/sshd.log" 2>&1 &
  start_pair "$mode" ssh "$dir"
  local up=no direct="" ssh=no end
  await_pair "$dir" ssh && up=yes
  end=$(awk -v t="$(cat "$dir/ssh.t0")" -v w=$DIRECT_WAIT 'BEGIN{printf "%d", t+w}')
  while [[ $up == yes ]] && (( $(date +%s) < end )); do
    direct=$(direct_secs "$dir/ssh.receiver.log" "$dir/ssh.t0" || true)
    [[ -n $direct ]] && break
    sleep 0.2
  done
  if [[ $up == yes ]]; then
    local out
    out=$(ip netns exec $R timeout 20 ssh -p 2222 -i "$TMP/userkey" -o StrictHostKeyChecking=no \
      -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=10 root@127.0.0.1 echo ok 2> "$dir/ssh.err") || true
    [[ $out == ok ]] && ssh=yes
  fi
  jq -n --arg mode "$mode" --arg sn "$sn" --arg rn "$rn" --arg up "$up" --arg direct "$direct" --arg ssh "$ssh" \
    '{mode:$mode, sender_nat:$sn, receiver_nat:$rn, connected:$up, direct_s:$direct, ssh:$ssh}' > "$dir/result.json"
  log "   $mode $sn/$rn #$i connected=$up direct=${direct:-no}${direct:+ s} ssh=$ssh"
  $NETLAB down >/dev/null 2>&1 || true
}

START=$SECONDS
CASES=()
for mode in $MODES; do for pair in $PAIRS; do for i in $(seq 1 "$RUNS"); do
  run_one "$mode" "$pair" "$i"
  CASES+=("$OUTDIR/runs/$OUT/$mode-${pair%/*}-${pair#*/}-$i/result.json")
done; done; done

jq -s . "${CASES[@]}" > "$OUTDIR/$OUT.json"
{
  echo "**peerport hard-NAT punch ($(date -u +%F\ %TZ), $RUNS runs per row, $((SECONDS-START)) s)**"
  echo
  echo "Direct = the receiver's path moved to direct within $DIRECT_WAIT s of its start; time = from its start to that line; ssh = a command through the tunnel afterwards."
  echo
  echo "| mode | sender/receiver NAT | connected | direct | median s | worst s | ssh ok |"
  echo "|---|---|---|---|---|---|---|"
  jq -r 'group_by([.mode, .sender_nat, .receiver_nat])[] |
    (map(select(.direct_s != "") | .direct_s | tonumber) | sort) as $t |
    "| \(.[0].mode) | \(.[0].sender_nat)/\(.[0].receiver_nat) | \(map(select(.connected=="yes"))|length)/\(length) | \($t|length)/\(length) | \(if ($t|length)>0 then $t[(($t|length)-1)/2|floor] else "" end) | \(if ($t|length)>0 then $t[-1] else "" end) | \(map(select(.ssh=="yes"))|length)/\(length) |"' \
    "$OUTDIR/$OUT.json"
} > "$OUTDIR/$OUT.md"
cat "$OUTDIR/$OUT.md"

if (( UPDATE_README )); then
  readme_table punch "$OUTDIR/$OUT.md"
fi
