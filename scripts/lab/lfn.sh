#!/usr/bin/env bash
# Long fat path: one TCP stream through the tunnel over a 200 Mbit/s, 100 ms RTT path with 1 %
# random loss (the receiver site's wire, both directions), for several QUIC flow-control windows.
#   lfn.sh [--modes "ice iroh-manual"] [--windows "default 4194304 8388608"] [--secs 20]
#          [--rate 200] [--rtt 100] [--loss 0.01] [--out NAME] [--extra "FLAGS for both sides"]
#          [--cc bbr]   (--congestion on both sides)
# Baseline in the same lab: plain TCP (iperf3, cubic) from the receiver host to the internet
# namespace over the same wire. Windows: bytes per stream (--stream-window; the
# connection window is 4x); "default" = the stacks' own (1.25 MB). Writes target/lab/NAME.md
# and NAME.json. Reports figures only (no assertions).
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
lab_preflight wire
MODES="ice iroh-manual"
WINDOWS="default 2097152 4194304 8388608 16777216"
SECS=20 RATE=200 RTT=100 LOSS=0.01 OUT=lfn CC=
PAIR_EXTRA=()
CONNECT_TIMEOUT=20
while [[ $# -gt 0 ]]; do
  case $1 in
    --modes) MODES=$2; shift ;;
    --windows) WINDOWS=$2; shift ;;
    --secs) SECS=$2; shift ;;
    --rate) RATE=$2; shift ;;
    --rtt) RTT=$2; shift ;;
    --loss) LOSS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --extra) read -r -a PAIR_EXTRA <<< "$2"; shift ;;
    --cc) CC=$2; shift ;;
    *) echo "usage: $0 [--modes LIST] [--windows LIST] [--secs N] [--rate MBIT] [--rtt MS] [--loss P] [--out NAME]" >&2; exit 2 ;;
  esac
  shift
done
lab_init
export PPLAB_WIRE=1
WIRE="rate_mbit=$RATE delay_ms=$((RTT / 2)) loss=$LOSS queue_ms=$RTT"
ROWS=()

iperf_mbps() { jq -r '.end.sum_received.bits_per_second // empty | ./1e6 | .*10 | floor | ./10' "$1" 2>/dev/null || true; }

row() {  # row MODE WINDOW MBPS NOTE
  jq -n --arg m "$1" --arg w "$2" --arg mbps "$3" --arg note "$4" --arg rate "$RATE" \
    '{mode:$m, window:$w, mbps:$mbps, pct_of_link: (if $mbps=="" then "" else (($mbps|tonumber)/($rate|tonumber)*100|floor|tostring) end), note:$note}'
}

run_one() {  # run_one MODE WINDOW
  local mode=$1 win=$2 dir=$OUTDIR/runs/$OUT/$1-$2
  rm -rf "$dir"; mkdir -p "$dir"
  log "== $mode window=$win"
  $NETLAB down >/dev/null 2>&1 || true
  $NETLAB up cone cone > "$dir/netlab.log" 2>&1 || { log "lab up failed"; return 0; }
  $NETLAB wire b $WIRE
  start_rendezvous "$dir" || return 0
  if [[ $mode == tcp ]]; then
    ip netns exec $PPLAB-inet timeout $((SECS + 15)) iperf3 -s -1 -B 198.18.0.1 > "$dir/server" 2>&1 &
    sleep 0.5
    ip netns exec $R timeout $((SECS + 10)) iperf3 -c 198.18.0.1 -t "$SECS" -J > "$dir/iperf.json" 2>&1 || true
    ROWS+=("$(row "plain TCP (no tunnel)" "-" "$(iperf_mbps "$dir/iperf.json")" "")")
    return 0
  fi
  local base=(${PAIR_EXTRA[@]+"${PAIR_EXTRA[@]}"})
  [[ -n $CC ]] && PAIR_EXTRA+=(--congestion "$CC")
  [[ $win != default ]] && PAIR_EXTRA+=(--stream-window "$win")
  start_pair "$mode" tcp5201 "$dir"
  PAIR_EXTRA=(${base[@]+"${base[@]}"})
  local mbps="" note=""
  if await_pair "$dir" tcp5201; then
    ip netns exec $S timeout $((SECS + 20)) iperf3 -s -1 -p 5201 > "$dir/server" 2>&1 &
    sleep 0.5
    # the data's QUIC sender is the receiver: sample its path (rtt, cwnd, loss) every second
    ( for _ in $(seq "$SECS"); do
        "$PP" status --json 2>/dev/null | jq -c --arg t "$(date +%s.%N)" '(if type=="array" then .[] else . end) | select(.info.role=="receiver") | .sessions[]? | {t:($t|tonumber), rtt_ms, min_rtt_ms, cwnd_bytes, congestion_events, lost_bytes, tx_bps}' 2>/dev/null
        sleep 1
      done > "$dir/path.jsonl" ) &
    local sampler=$!
    ip netns exec $R timeout $((SECS + 15)) iperf3 -c 127.0.0.1 -p 5201 -t "$SECS" -J > "$dir/iperf.json" 2>&1 || true
    kill "$sampler" 2>/dev/null || true
    mbps=$(iperf_mbps "$dir/iperf.json")
    note=$(grep -hoE 'too many gaps[^"]*|tunnel lost[^(]*' "$dir"/tcp5201.*.log | sort -u | paste -sd ';' - || true)
  else
    note="did not connect"
  fi
  ROWS+=("$(row "$mode" "$win" "$mbps" "$note")")
  log "   $mbps Mbit/s $note"
}

START=$SECONDS
run_one tcp -
for mode in $MODES; do for w in $WINDOWS; do run_one "$mode" "$w"; done; done
$NETLAB down >/dev/null 2>&1 || true
printf '%s\n' "${ROWS[@]}" | jq -s . > "$OUTDIR/$OUT.json"
{
  echo "**Long fat path: one TCP stream, ${RATE} Mbit/s, ${RTT} ms RTT, loss $LOSS each way ($(date -u +%F), $((SECS)) s per run, $((SECS_TOTAL=SECONDS-START)) s total)**"
  echo
  echo "| tunnel | stream window (bytes; connection 4x) | Mbit/s | % of the link | note |"
  echo "|---|---|---|---|---|"
  jq -r '.[] | "| \(.mode) | \(.window) | \(.mbps) | \(.pct_of_link) | \(.note) |"' "$OUTDIR/$OUT.json"
} > "$OUTDIR/$OUT.md"
cat "$OUTDIR/$OUT.md"
