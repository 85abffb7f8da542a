#!/usr/bin/env bash
# Fault lab: an ssh session through peerport while the network misbehaves.
#   faults.sh [--quick] [--iperf] [--modes "iroh ice"] [--cases "loss1 blackout40"] [--out NAME]
#
# Lab: cone/cone NAT sites (netlab.sh) with a userspace wire (`peerport-lab wire`, PPLAB_WIRE=1)
# between each router and the internet, because this kernel has no netem. Sender in site a
# (sshd), receiver in site b. Per case: an ssh "ticker" session (one line a second) and an
# 32 MiB download through ssh, started before the fault, over a 50 Mbit/s link; then the fault; then the checks:
#   survived   the ticker session ended normally with every tick (exit 0, "done")
#   exact      the download's sha256 matches the file
#   stall      longest gap between ticks arriving at the client (s)
#   replayed   bytes both sides replayed when resuming streams ("stream resumed" lines)
# Cases:
#   loss1 loss5        1 % / 5 % random loss on the receiver site's wire, both directions
#   rtt50 rtt200       +50 / +200 ms round trip (receiver site's wire), 2 ms jitter
#   blackout7          the receiver site's wire drops everything for 7 s (not in the default list)
#   blackout40         the receiver site's wire drops everything for 40 s (> --idle-timeout 30)
#   natflush           conntrack -F on both routers (every NAT mapping forgotten)
#   readdr-receiver    the receiver host moves to a new LAN address (10.0.2.3), old one removed
#   readdr-sender      the sender host moves to 10.0.1.3
#   sender-restart     the sender is killed and started again: resume is impossible, the ticker
#                      must end (not hang) and a new ssh session must work
#   relay-restart      both sides use only the relay (--relay-only: iroh's relay; ice and nostr:
#                      TURN), and the relay servers are restarted (down 5 s): iroh's relay, the
#                      embedded TURN server (and the Nostr relay), or coturn in the "@coturn"
#                      modes. Not for iroh-manual, which has no relay; the @coturn modes run
#                      only this case.
# --iperf (opt-in; readdr cases only): a second tunnel (tcp5201) forwards an iperf3 server in the
# sender host (127.0.0.1:5201); an iperf3 TCP client in the receiver host sends through it for
# 30 s (-i 1), started ~4 s before the fault. Extra result fields (iperf: exit status, sender and
# receiver sums, longest run of 1 s intervals with no bytes at the receiving side) and columns.
# Output: target/lab/NAME.md and NAME.json (default NAME=faults); logs in runs/NAME/MODE-CASE/.
# Exits 1 when a case misses its expectation (every case survives and is exact, except
# sender-restart, which must end the old session and serve a new one; in the loss and rtt cases
# the ticker never stalls over 2 s beside the download).
set -euo pipefail

source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
lab_preflight wire

MODES="iroh iroh-manual ice nostr ice@coturn"
CASES="loss1 loss5 rtt50 rtt200 blackout40 natflush readdr-receiver readdr-sender sender-restart relay-restart"
OUT=faults
EXTRA=""   # MODE:CASE pairs run after the MODES x CASES grid
CONNECT_TIMEOUT=20
IPERF=0
IPERF_SECS=${PPLAB_IPERF_SECS:-30}   # --iperf: the client's -t
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) MODES="iroh ice"; CASES="loss5 rtt200 blackout40 natflush readdr-receiver sender-restart relay-restart"
             EXTRA="nostr:readdr-sender iroh-manual:sender-restart" ;;
    --modes) MODES=$2; shift ;;
    --cases) CASES=$2; shift ;;
    --out) OUT=$2; shift ;;
    --iperf) IPERF=1 ;;
    *) echo "usage: $0 [--quick] [--iperf] [--modes LIST] [--cases LIST] [--out NAME]" >&2; exit 2 ;;
  esac
  shift
done
lab_init
export PPLAB_WIRE=1
head -c 32M /dev/urandom > "$TMP/payload"
# every case runs over a 50 Mbit/s link (receiver site), so the download is under way at the fault
BASE="rate_mbit=50 queue_ms=100"
PAYLOAD_SHA=$(sha256sum "$TMP/payload" | awk '{print $1}')

inject() {  # inject CASE DIR: apply the fault (returns when it is over)
  case $1 in
    loss1) $NETLAB wire b $BASE loss=0.01 ;;
    loss5) $NETLAB wire b $BASE loss=0.05 ;;
    rtt50) $NETLAB wire b $BASE delay_ms=25 jitter_ms=2 ;;
    rtt200) $NETLAB wire b $BASE delay_ms=100 jitter_ms=2 ;;
    blackout7) $NETLAB wire b $BASE down=1; sleep 7; $NETLAB wire b $BASE ;;
    blackout40) $NETLAB wire b $BASE down=1; sleep 40; $NETLAB wire b $BASE ;;
    natflush) for s in a b; do ip netns exec $PPLAB-$s-rtr conntrack -F >/dev/null 2>&1 || true; done ;;
    readdr-receiver) $NETLAB readdr b 10.0.2.3 ;;
    readdr-sender) $NETLAB readdr a 10.0.1.3 ;;
    sender-restart) restart_sender "$2" ssh ;;
    relay-restart) if [[ $3 == *@coturn ]]; then restart_coturn "$2" 5; else restart_rendezvous "$2" 5; fi ;;
  esac
}

# ---- --iperf: iperf3 through a second tunnel during the readdr cases ----------------------------
iperf_case() { [[ $IPERF == 1 && $1 == readdr-* ]]; }

# start_iperf DIR: a one-shot iperf3 server in the sender host (127.0.0.1:5201, the tcp5201
# tunnel's source) and a client in the receiver host (127.0.0.1:5201, the tunnel's target) sending
# for IPERF_SECS s, both bounded by timeout(1); sets IPERF_PID (client) and IPERF_SPID (server)
start_iperf() {
  local dir=$1
  ip netns exec $S timeout $(( IPERF_SECS + 90 )) iperf3 -s -1 -B 127.0.0.1 -p 5201 -J \
    > "$dir/iperf.server.json" 2> "$dir/iperf.server.err" &
  IPERF_SPID=$!
  sleep 0.3
  ( rc=0
    ip netns exec $R timeout $(( IPERF_SECS + 60 )) iperf3 -c 127.0.0.1 -p 5201 -t $IPERF_SECS -i 1 -J \
      --get-server-output --connect-timeout 10000 > "$dir/iperf.json" 2> "$dir/iperf.err" || rc=$?
    echo $rc > "$dir/iperf.rc" ) &
  IPERF_PID=$!
}

# stop_iperf: wait for the client (bounded), then the server
stop_iperf() {
  local end=$(( SECONDS + IPERF_SECS + 70 ))
  while kill -0 $IPERF_PID 2>/dev/null && (( SECONDS < end )); do sleep 0.5; done
  kill $IPERF_PID 2>/dev/null || true; wait $IPERF_PID 2>/dev/null || true
  end=$(( SECONDS + 10 ))
  while kill -0 $IPERF_SPID 2>/dev/null && (( SECONDS < end )); do sleep 0.5; done
  kill $IPERF_SPID 2>/dev/null || true; wait $IPERF_SPID 2>/dev/null || true
}

jsonf() {  # jsonf FILE: the file's JSON; {} when it is missing or cut off
  local j
  j=$(jq -cs '.[0] // {}' "$1" 2>/dev/null) && [[ -n $j ]] || j='{}'
  echo "$j"
}

# iperf_result DIR TUNNEL: the iperf object of result.json. zero_gap_s: the longest run of
# intervals with 0 bytes at the receiving side (the server's own JSON, else the client's copy of
# it), or at the sending side when neither exists (gap_from says which); zero_gap_open: that run
# lasts to the last interval (the test ended inside it, so the real gap is longer: iperf3's server
# gives up 40 s after the test's duration). received_bytes_intervals: the bytes in the receiver's
# intervals (iperf3 reports no receiver sum when the end of the test fails: `error`)
iperf_result() {
  local dir=$1 tunnel=$2 rc note
  rc=$(cat "$dir/iperf.rc" 2>/dev/null || true)
  note=$( { grep -hoE 'the sender did not resume[^"]*|session resumed[^"]*|path (changed|selected)[^"]*' \
    "$dir/tcp5201.receiver.log" 2>/dev/null || true; } | sort | uniq -c | sed 's/^ *//' | paste -sd ';' -)
  jq -n --arg tunnel "$tunnel" --arg rc "$rc" --arg note "$note" \
    --argjson c "$(jsonf "$dir/iperf.json")" --argjson s "$(jsonf "$dir/iperf.server.json")" '
    def mbps: if . == null then null else ./1e6*10 | floor/10 end;
    def gap: reduce .[] as $i ({run: 0, max: 0};
      if ($i.bytes // 0) == 0 then .run += $i.seconds | .max = ([.max, .run] | max) else .run = 0 end)
      | {s: (.max*10 | round/10), open: (.run > 0 and .run >= .max)};
    (($s.intervals // $c.server_output_json.intervals // []) | map(.sum)) as $recv
    | (($c.intervals // []) | map(.sum)) as $sent
    | (if ($recv | length) > 0 then $recv else $sent end) as $iv
    | ($iv | gap) as $g
    | {tunnel: $tunnel, rc: (if $rc == "" then null else ($rc | tonumber) end),
       error: ($c.error // ""), server_error: ($s.error // ""),
       sent_bytes: $c.end.sum_sent.bytes, sent_mbps: ($c.end.sum_sent.bits_per_second | mbps),
       received_bytes: $c.end.sum_received.bytes,
       received_mbps: ($c.end.sum_received.bits_per_second | mbps),
       received_bytes_intervals: ($recv | map(.bytes // 0) | add),
       zero_gap_s: (if ($iv | length) > 0 then $g.s else null end),
       zero_gap_open: (($iv | length) > 0 and $g.open),
       gap_from: (if ($recv | length) > 0 then "receiver" elif ($sent | length) > 0 then "sender" else "" end),
       intervals: ($iv | length), log: $note}'
}

applies() {  # applies MODE CASE: whether the case makes sense for the mode
  case $1:$2 in
    iroh-manual:relay-restart) return 1 ;;
    *@coturn:relay-restart) return 0 ;;
    *@coturn:*) return 1 ;;
  esac
}

run_case() {
  local mode=$1 case=$2
  local dir=$OUTDIR/runs/$OUT/$mode-$case
  rm -rf "$dir"; mkdir -p "$dir"
  log "== $mode $case"
  $NETLAB down >/dev/null 2>&1 || true
  $NETLAB up cone cone > "$dir/netlab.log" 2>&1 || { log "lab up failed"; cat "$dir/netlab.log" >&2; return 0; }
  local connected=no survived=no exact=no stall="" replayed=0 outage="" after=no note=""
  local recover_open="" recover_new=""
  local iperf_tunnel="" iperf_run=no
  $NETLAB wire b $BASE
  PAIR_EXTRA=()
  [[ $case == relay-restart ]] && PAIR_EXTRA=(--relay-only)
  if start_rendezvous "$dir" && { [[ $mode != *@coturn ]] || use_coturn "$dir"; }; then
    ip netns exec $S /usr/sbin/sshd -D -e -f "$TMP/sshd_config" > "$dir/sshd.log" 2>&1 &
    start_pair "$mode" ssh "$dir"
    await_pair "$dir" ssh && connected=yes
  fi
  if [[ $connected == yes ]] && iperf_case "$case"; then
    iperf_tunnel=no
    start_pair "$mode" tcp5201 "$dir"
    if await_pair "$dir" tcp5201; then iperf_tunnel=yes; else log "   the iperf3 tunnel (tcp5201) did not connect"; fi
  fi
  if [[ $connected == yes ]]; then
    [[ $mode == iroh ]] && sleep 3   # let iroh settle on its path
    if [[ $iperf_tunnel == yes ]]; then start_iperf "$dir"; iperf_run=yes; fi
    start_ticker "$dir" 400
    local ticker=$TICKER
    sleep 3
    ( ssh_r 400 "cat $TMP/payload" 2> "$dir/download.err" | sha256sum | awk '{print $1}' > "$dir/download.sha" ) &
    local download=$!
    sleep 1
    local t_fault; t_fault=$(now)
    inject "$case" "$dir" "$mode"
    local t_end; t_end=$(now)
    # recovery through a new connection, measured from the fault's end (in the background, so
    # the checks below are not delayed)
    ( first_byte_new "$t_end" > "$dir/recover_new" ) &
    local probe=$!
    log "   fault applied ($(awk -v a="$t_fault" -v b="$t_end" 'BEGIN{printf "%.0f", b-a}') s)"
    # bounded: the download finishes, then the ticker is told to stop
    local end=$(( SECONDS + 300 ))
    while kill -0 $download 2>/dev/null && (( SECONDS < end )); do sleep 0.5; done
    kill $download 2>/dev/null || true
    if [[ $iperf_run == yes ]]; then stop_iperf; fi
    # loss and delay stay on while the download runs; clear them before stopping the ticker
    $NETLAB wire b $BASE >/dev/null 2>&1 || true
    sleep 3
    touch "$TMP/stop"
    end=$(( SECONDS + 120 ))
    while kill -0 $ticker 2>/dev/null && (( SECONDS < end )); do sleep 0.5; done
    kill $ticker 2>/dev/null || true; wait $ticker 2>/dev/null || true
    [[ $(cat "$dir/download.sha" 2>/dev/null) == "$PAYLOAD_SHA" ]] && exact=yes
    ticker_survived "$dir" && survived=yes
    stall=$(ticker_stall "$dir")
    [[ $survived == yes ]] && recover_open=$(ticker_after "$dir" "$t_end")
    wait $probe 2>/dev/null || true
    recover_new=$(cat "$dir/recover_new" 2>/dev/null || true)
    replayed=$( { grep -ho 'stream resumed replayed=[0-9]*' "$dir"/ssh.*.log || true; } | awk -F= '{s+=$2} END{print s+0}')
    outage=$(grep -ho 'stream resumed.*outage_ms=[0-9]*' "$dir/ssh.receiver.log" | tail -1 | grep -o '[0-9]*$' || true)
    # a new session works afterwards
    [[ $(ssh_r 60 echo ok 2> "$dir/after.err" || true) == ok ]] && after=yes
    note=$(grep -hoE 'the sender did not resume[^"]*|session resumed[^"]*|path (changed|selected)[^"]*' "$dir/ssh.receiver.log" | sort | uniq -c | sed 's/^ *//' | paste -sd ';' - || true)
  fi
  jq -n --arg mode "$mode" --arg case "$case" --arg connected "$connected" --arg survived "$survived" \
    --arg exact "$exact" --arg stall "$stall" --arg replayed "$replayed" --arg outage "$outage" \
    --arg after "$after" --arg note "$note" --arg ro "$recover_open" --arg rn "$recover_new" \
    '{mode:$mode, case:$case, connected:$connected, survived:$survived, exact:$exact, stall_s:$stall,
      replayed:($replayed|tonumber), outage_ms:$outage, new_session:$after,
      recover_open_s:(if $ro == "" then null else ($ro|tonumber) end),
      recover_new_s:(if $rn == "" then null else ($rn|tonumber) end), log:$note}' > "$dir/result.json"
  log "   connected=$connected survived=$survived exact=$exact stall=${stall}s replayed=$replayed new-session=$after recover open=${recover_open:--}s new=${recover_new:--}s"
  if iperf_case "$case"; then
    local ip; ip=$(iperf_result "$dir" "${iperf_tunnel:-no}")
    jq --argjson ip "$ip" '. + {iperf: $ip}' "$dir/result.json" > "$dir/result.json.new" && mv "$dir/result.json.new" "$dir/result.json"
    log "   iperf3: $(jq -r '"tunnel=\(.tunnel) rc=\(.rc) Mbit/s sent=\(.sent_mbps) received=\(.received_mbps) zero-gap=\(if .zero_gap_open then ">=" else "" end)\(.zero_gap_s)s (\(.gap_from)) \(.error) \(.server_error)"' <<< "$ip")"
  fi
  $NETLAB down >/dev/null 2>&1 || true
}

# Recovery bound the CI machine meets every time (the targets are 5 s; the table shows the figures):
# from the fault's end to the first byte through the open session and through a new connection
RECOVER_BOUND=${PPLAB_RECOVER_BOUND:-10}
# While only loss or delay is added, the ticker (a shell) must keep ticking
# beside the download (a bulk transfer in the same tunnel): the longest gap
# between its ticks (every 0.2 s) stays under this many seconds.
STALL_BOUND=${PPLAB_STALL_BOUND:-2}
EXPECT='
  .[] |
  (if .connected != "yes" then "\(.mode) \(.case): did not connect" else empty end),
  (if .connected == "yes" and .case != "sender-restart" and .survived != "yes"
     then "\(.mode) \(.case): the ssh session did not survive" else empty end),
  (if .connected == "yes" and .case != "sender-restart" and .exact != "yes"
     then "\(.mode) \(.case): the download was not exact" else empty end),
  (if .connected == "yes" and .case == "sender-restart" and .survived == "yes"
     then "\(.mode) sender-restart: the old session cannot survive a restarted sender, yet it reported success" else empty end),
  (if .connected == "yes" and .new_session != "yes" then "\(.mode) \(.case): no new ssh session afterwards" else empty end),
  (if .connected == "yes" and .case != "sender-restart" and .survived == "yes" and (.recover_open_s // 999) > '"$RECOVER_BOUND"'
     then "\(.mode) \(.case): the open session took \(.recover_open_s // "forever") s after the fault to move again (bound '"$RECOVER_BOUND"' s)" else empty end),
  (if .connected == "yes" and (.case | test("^(loss|rtt)")) and (((.stall_s // "") | tonumber?) // 999) > '"$STALL_BOUND"'
     then "\(.mode) \(.case): the ticker stalled \(.stall_s) s beside the download (bound '"$STALL_BOUND"' s)" else empty end),
  (if .connected == "yes" and (.recover_new_s // 999) > '"$RECOVER_BOUND"'
     then "\(.mode) \(.case): a new connection got its first byte \(.recover_new_s // "never") s after the fault (bound '"$RECOVER_BOUND"' s)" else empty end)
'

START=$SECONDS
RESULTS=()
PAIRS=()
for mode in $MODES; do for c in $CASES; do
  applies "$mode" "$c" && PAIRS+=("$mode:$c")
done; done
for pair in "${PAIRS[@]}" $EXTRA; do
  mode=${pair%%:*} c=${pair#*:}
  res=$OUTDIR/runs/$OUT/$mode-$c/result.json
  run_checked "$res" "$mode" "$c"
  RESULTS+=("$res")
done
jq -s . "${RESULTS[@]}" > "$OUTDIR/$OUT.json"
if [[ $IPERF == 1 ]]; then
{
  echo "**peerport fault lab ($(date -u +%F\ %TZ), $((SECONDS-START)) s)**"
  echo
  echo "cone/cone sites; sender in a, receiver in b; the fault on b's wire unless noted. survived = the ssh ticker session ended normally with every tick; exact = the 32 MiB download (50 Mbit/s link) through ssh matched its sha256; stall = longest gap between ticks at the client; replayed = bytes resent when streams resumed; outage = the receiver's last \`stream resumed\` outage. iperf3 (--iperf, readdr cases): a second tunnel forwards an iperf3 server in a; a client in b sends for ${IPERF_SECS} s from ~4 s before the fault; rc = its exit status (124: timed out; \"err\": its JSON reports an error, iperf3 may still exit 0); Mbit/s and MB (10^6 bytes) are the sender/receiver sums as iperf3 reports them (on an error it has no receiver sum: \"-\", and (MB) counts the receiver's 1 s intervals); 0-gap = longest run of 1 s intervals without bytes at the receiving side (>=: the test ended inside it)."
  echo
  echo "| mode | case | survived | exact | stall s | replayed bytes | outage ms | new session | iperf rc | iperf Mbit/s snd/rcv | iperf MB snd/rcv | iperf 0-gap s | log |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  jq -r 'def mb: if . == null then "-" else ./1e5 | floor/10 | tostring end;
    .[] | "| \(.mode) | \(.case) | \(.survived) | \(.exact) | \(.stall_s) | \(.replayed) | \(.outage_ms) | \(.new_session) | \(if .iperf == null then "-" elif .iperf.tunnel != "yes" then "no tunnel" else "\(.iperf.rc // "-")\(if (.iperf.error // "") != "" then " err" else "" end)" end) | \(if .iperf.sent_mbps == null then "-" elif (.iperf.error // "") != "" then "\(.iperf.sent_mbps)/-" else "\(.iperf.sent_mbps)/\(.iperf.received_mbps)" end) | \(if .iperf.sent_bytes == null then "-" elif (.iperf.error // "") != "" then "\(.iperf.sent_bytes|mb)/(\(.iperf.received_bytes_intervals|mb))" else "\(.iperf.sent_bytes|mb)/\(.iperf.received_bytes|mb)" end) | \(if .iperf.zero_gap_s == null then "-" else "\(if .iperf.zero_gap_open then ">=" else "" end)\(.iperf.zero_gap_s)" end) | \(.log|gsub("\\|";"/")) |"' "$OUTDIR/$OUT.json"
} > "$OUTDIR/$OUT.md"
else
{
  echo "**peerport fault lab ($(date -u +%F\ %TZ), $((SECONDS-START)) s)**"
  echo
  echo "cone/cone sites; sender in a, receiver in b; the fault on b's wire unless noted. survived = the ssh ticker session ended normally with every tick; exact = the 32 MiB download (50 Mbit/s link) through ssh matched its sha256; stall = longest gap between ticks at the client; replayed = bytes resent when streams resumed; outage = the receiver's last \`stream resumed\` outage. Recovery, from the fault's end (a blackout's end, the restarted process or server started): open = to the first tick through the already-open ssh session (ticks every 0.2 s; - when it cannot survive), new = to the first byte (sshd's banner) through a new TCP connection, tried every 0.2 s from then."
  echo
  echo "| mode | case | survived | exact | stall s | recovery open s | recovery new s | replayed bytes | outage ms | new session | log |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  jq -r '.[] | "| \(.mode) | \(.case) | \(.survived) | \(.exact) | \(.stall_s) | \(.recover_open_s // "-") | \(.recover_new_s // "-") | \(.replayed) | \(.outage_ms) | \(.new_session) | \(.log|gsub("\\|";"/")) |"' "$OUTDIR/$OUT.json"
} > "$OUTDIR/$OUT.md"
fi
cat "$OUTDIR/$OUT.md"
FAIL=$(jq -r "$EXPECT" "$OUTDIR/$OUT.json" | sort -u)
if [[ -n $FAIL ]]; then
  echo "fault lab expectations violated:" >&2
  echo "$FAIL" >&2
  exit 1
fi
echo "fault lab expectations met" >&2
