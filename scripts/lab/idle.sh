#!/usr/bin/env bash
# Idle tunnels on a slow, lossy path: does the receiver take a live but quiet sender for dead?
#   idle.sh [--modes "iroh ice"] [--minutes 5] [--wire "delay_ms=100 jitter_ms=2 loss=0.05"] [--out NAME]
#
# Lab: cone/cone NAT sites with the userspace wire (as faults.sh). Per mode, one ssh tunnel that
# carries nothing for --minutes while the receiver site's wire adds the delay and loss of --wire
# (default 200 ms round trip, 5 % loss each way). Only keep-alives cross it, so every loss the
# receiver declares ("tunnel lost") is a false one. Reports per mode: the losses, the sessions
# it took, and how often the status went stale.
# Output: target/lab/NAME.md and NAME.json (default NAME=idle); logs in runs/NAME/.
# Reports figures only (no assertions).
set -euo pipefail

source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
lab_preflight wire

MODES="iroh iroh-manual ice nostr" MINUTES=5 WIRE="delay_ms=100 jitter_ms=2 loss=0.05" OUT=idle
CONNECT_TIMEOUT=20
while [[ $# -gt 0 ]]; do
  case $1 in
    --modes) MODES=$2; shift ;;
    --minutes) MINUTES=$2; shift ;;
    --wire) WIRE=$2; shift ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--modes LIST] [--minutes N] [--wire PARAMS] [--out NAME]" >&2; exit 2 ;;
  esac
  shift
done
lab_init
export PPLAB_WIRE=1
BASE="rate_mbit=50 queue_ms=100"

RESULTS=()
for mode in $MODES; do
  dir=$OUTDIR/runs/$OUT/$mode
  rm -rf "$dir"; mkdir -p "$dir"
  log "== $mode: idle for $MINUTES min over $WIRE"
  $NETLAB down >/dev/null 2>&1 || true
  $NETLAB up cone cone > "$dir/netlab.log" 2>&1 || { log "lab up failed"; cat "$dir/netlab.log" >&2; continue; }
  $NETLAB wire b $BASE
  connected=no
  PAIR_EXTRA=()
  if start_rendezvous "$dir"; then
    start_pair "$mode" ssh "$dir"
    await_pair "$dir" ssh && connected=yes
  fi
  lost=0 sessions=0 stale=0
  if [[ $connected == yes ]]; then
    $NETLAB wire b $BASE $WIRE
    sleep $(( MINUTES * 60 ))
    $NETLAB wire b $BASE
    lost=$(grep -c 'tunnel lost' "$dir/ssh.receiver.log" || true)
    sessions=$(grep -c 'session established' "$dir/ssh.receiver.log" || true)
    stale=$(grep -c 'stale: nothing heard' "$dir/ssh.receiver.log" || true)
  fi
  for f in spid rpid; do kill "$(cat "$dir/ssh.$f" 2>/dev/null)" 2>/dev/null || true; done
  jq -n --arg mode "$mode" --arg connected "$connected" --arg wire "$WIRE" --argjson minutes "$MINUTES" \
    --argjson lost "$lost" --argjson sessions "$sessions" --argjson stale "$stale" \
    '{mode:$mode, connected:$connected, wire:$wire, minutes:$minutes, false_losses:$lost, sessions:$sessions, stale:$stale}' \
    > "$dir/result.json"
  RESULTS+=("$dir/result.json")
  log "   connected=$connected false-losses=$lost sessions=$sessions stale=$stale"
  $NETLAB down >/dev/null 2>&1 || true
done
jq -s . "${RESULTS[@]}" > "$OUTDIR/$OUT.json"
{
  echo "| mode | wire | minutes | false losses | sessions | stale |"
  echo "|---|---|---|---|---|---|"
  jq -r '.[] | "| \(.mode) | \(.wire) | \(.minutes) | \(.false_losses) | \(.sessions) | \(.stale) |"' "$OUTDIR/$OUT.json"
} > "$OUTDIR/$OUT.md"
cat "$OUTDIR/$OUT.md"
