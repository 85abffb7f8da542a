#!/usr/bin/env bash
# Soak: one tunnel for a long time, a fault every few minutes, steady traffic; are memory and
# open files flat, and does every transfer stay exact?
#   soak.sh [--mode ice] [--minutes 60] [--every 180] [--faults "loss5 natflush"] [--out NAME]
#
# Lab: cone/cone NAT sites with the userspace wire (as faults.sh), 50 Mbit/s link. Sender in
# site a (sshd), receiver in site b. Traffic for the whole run:
#   ticker     one ssh session printing a line a second (must survive everything)
#   downloads  a new ssh connection every ~10 s that fetches 4 MiB and checks its sha256
#              (ok; bad = complete but wrong, must never happen; failed = ssh failed, which a
#              new connection may during a blackout)
# Faults, in turn, one every --every seconds: loss5 (60 s), rtt200 (60 s), blackout40, natflush,
# readdr-receiver (the receiver host alternates between two addresses); --faults picks some.
# Every 30 s: RSS (VmRSS) and open fds of the sender and the receiver (samples.csv).
# Output: target/lab/NAME.md and NAME.json (default NAME=soak-MODE); logs in runs/NAME/.
# Reports figures; exits 1 when the ticker died or a download was not exact.
set -euo pipefail

source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
lab_preflight wire

MODE=ice MINUTES=60 EVERY=180 OUT=""
CONNECT_TIMEOUT=20
while [[ $# -gt 0 ]]; do
  case $1 in
    --mode) MODE=$2; shift ;;
    --minutes) MINUTES=$2; shift ;;
    --every) EVERY=$2; shift ;;
    --faults) read -r -a FAULTS_ARG <<< "$2"; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--mode MODE] [--minutes N] [--every SECS] [--faults LIST] [--out NAME]" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-soak-$MODE}
lab_init
export PPLAB_WIRE=1
BASE="rate_mbit=50 queue_ms=100"
head -c 4M /dev/urandom > "$TMP/payload"
PAYLOAD_SHA=$(sha256sum "$TMP/payload" | awk '{print $1}')
DIR=$OUTDIR/runs/$OUT
rm -rf "$DIR"; mkdir -p "$DIR"

rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$1/status" 2>/dev/null || echo ""; }
nfds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }

$NETLAB down >/dev/null 2>&1 || true
$NETLAB up cone cone > "$DIR/netlab.log" 2>&1 || { log "lab up failed"; cat "$DIR/netlab.log" >&2; exit 1; }
$NETLAB wire b $BASE
start_rendezvous "$DIR" || exit 1
ip netns exec $S /usr/sbin/sshd -D -e -f "$TMP/sshd_config" > "$DIR/sshd.log" 2>&1 &
start_pair "$MODE" ssh "$DIR"
await_pair "$DIR" ssh || { log "the tunnel did not come up"; exit 1; }
SPID=$(cat "$DIR/ssh.spid") RPID=$(cat "$DIR/ssh.rpid")
# ip netns exec execs the binary, so these are the peerport processes themselves
sleep 3
log "soak: $MODE for $MINUTES min, a fault every $EVERY s; sender pid $SPID, receiver pid $RPID"

start_ticker "$DIR" $(( MINUTES * 60 + 300 ))
# ok = exact; bad = complete but different bytes (must never happen); failed = ssh failed
# (a new connection can time out while a blackout is on)
( set +e
  while [[ ! -e $TMP/stop ]]; do
    ssh_r 300 "cat $TMP/payload" > "$TMP/download" 2>> "$DIR/downloads.err"; rc=$?
    if (( rc != 0 )); then echo "$(now) failed rc=$rc"
    elif [[ $(sha256sum < "$TMP/download" | awk '{print $1}') == "$PAYLOAD_SHA" ]]; then echo "$(now) ok"
    else echo "$(now) bad"; fi
    sleep 10
  done > "$DIR/downloads" ) &
LOADER=$!

echo "t_s,sender_rss_kb,sender_fds,receiver_rss_kb,receiver_fds,event" > "$DIR/samples.csv"
sample() { echo "$(( SECONDS - START )),$(rss_kb $SPID),$(nfds $SPID),$(rss_kb $RPID),$(nfds $RPID),$1" >> "$DIR/samples.csv"; }

FAULTS=(loss5 rtt200 blackout40 natflush readdr-receiver)
if [[ -n ${FAULTS_ARG+x} ]]; then FAULTS=("${FAULTS_ARG[@]}"); fi
ADDRS=(10.0.2.3 10.0.2.2)
START=$SECONDS
END=$(( START + MINUTES * 60 ))
next_fault=$(( START + 60 )) next_sample=$START k=0 faults=0
while (( SECONDS < END )); do
  if (( SECONDS >= next_sample )); then
    sample ""
    while (( next_sample <= SECONDS )); do next_sample=$(( next_sample + 30 )); done
  fi
  if (( SECONDS >= next_fault )); then
    f=${FAULTS[$(( k % ${#FAULTS[@]} ))]}
    log "   fault $f"
    sample "$f"
    case $f in
      loss5) $NETLAB wire b $BASE loss=0.05; sleep 60; $NETLAB wire b $BASE ;;
      rtt200) $NETLAB wire b $BASE delay_ms=100 jitter_ms=2; sleep 60; $NETLAB wire b $BASE ;;
      blackout40) $NETLAB wire b $BASE down=1; sleep 40; $NETLAB wire b $BASE ;;
      natflush) for s in a b; do ip netns exec $PPLAB-$s-rtr conntrack -F >/dev/null 2>&1 || true; done ;;
      readdr-receiver) $NETLAB readdr b "${ADDRS[$(( (k / ${#FAULTS[@]}) % 2 ))]}" > /dev/null ;;
    esac
    k=$(( k + 1 )); faults=$(( faults + 1 ))
    next_fault=$(( next_fault + EVERY ))
  fi
  kill -0 $SPID 2>/dev/null && kill -0 $RPID 2>/dev/null || { log "a peerport process died"; break; }
  sleep 1
done
sample end
touch "$TMP/stop"
end=$(( SECONDS + 360 ))
while { kill -0 $TICKER 2>/dev/null || kill -0 $LOADER 2>/dev/null; } && (( SECONDS < end )); do sleep 1; done
kill $TICKER $LOADER 2>/dev/null || true

survived=no
ticker_survived "$DIR" && survived=yes
ticks=$(grep -c ' tick ' "$DIR/ticks" || true)
stall=$(ticker_stall "$DIR")
ok=$(grep -c ' ok$' "$DIR/downloads" || true); bad=$(grep -c ' bad$' "$DIR/downloads" || true)
failed=$(grep -c ' failed' "$DIR/downloads" || true)
resumed=$(grep -c 'stream resumed' "$DIR/ssh.receiver.log" || true)
# flat: the last quarter's RSS against the first quarter's (after the first fault), and fds
stats=$(awk -F, -v total=$(( MINUTES * 60 )) '
  NR > 1 && $2 != "" && $1 >= 60 {
    q = ($1 < total / 4) ? "first" : (($1 >= total * 3 / 4) ? "last" : "");
    if (q != "") { s[q] += $2; r[q] += $4; n[q]++; sf[q] = sf[q] > $3 ? sf[q] : $3; rf[q] = rf[q] > $5 ? rf[q] : $5 }
    smax = smax > $2 ? smax : $2; rmax = rmax > $4 ? rmax : $4
  }
  END {
    printf "{\"sender_rss_mb_first_quarter\": %.1f, \"sender_rss_mb_last_quarter\": %.1f, \"sender_rss_mb_max\": %.1f, ",
      s["first"] / n["first"] / 1024, s["last"] / n["last"] / 1024, smax / 1024
    printf "\"receiver_rss_mb_first_quarter\": %.1f, \"receiver_rss_mb_last_quarter\": %.1f, \"receiver_rss_mb_max\": %.1f, ",
      r["first"] / n["first"] / 1024, r["last"] / n["last"] / 1024, rmax / 1024
    printf "\"sender_fds_max_first_last\": [%d, %d], \"receiver_fds_max_first_last\": [%d, %d]}", sf["first"], sf["last"], rf["first"], rf["last"]
  }' "$DIR/samples.csv")
jq -n --arg mode "$MODE" --arg minutes "$MINUTES" --arg faults "$faults" --arg survived "$survived" \
  --arg ticks "$ticks" --arg stall "$stall" --arg ok "$ok" --arg bad "$bad" --arg failed "$failed" \
  --arg resumed "$resumed" \
  --argjson stats "$stats" \
  '{mode:$mode, minutes:($minutes|tonumber), faults:($faults|tonumber), ticker_survived:$survived,
    ticks:($ticks|tonumber), longest_stall_s:$stall, downloads_exact:($ok|tonumber), downloads_bad:($bad|tonumber),
    downloads_failed:($failed|tonumber),
    streams_resumed:($resumed|tonumber)} + $stats' > "$OUTDIR/$OUT.json"
{
  echo "**peerport soak, $MODE ($(date -u +%F), $MINUTES min, a fault every $EVERY s)**"
  echo
  jq -r 'to_entries[] | "- \(.key): \(.value)"' "$OUTDIR/$OUT.json"
  echo
  echo "Samples (every 30 s): runs/$OUT/samples.csv"
} > "$OUTDIR/$OUT.md"
cat "$OUTDIR/$OUT.md"
[[ $survived == yes && $bad == 0 ]]
