# Shared by the lab scripts (matrix.sh, faults.sh, lfn.sh): paths, preflight, ssh and Nostr
# material, starting the rendezvous servers, coturn, and sender/receiver pairs.

LAB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# PPLAB_NAME: the lab's namespace prefix (default pplab; netlab.sh reads it too)
PPLAB=${PPLAB_NAME:-pplab}
ROOT=$(cd "$LAB/../.." && pwd)
PP=${PEERPORT_BIN:-$ROOT/target/release/peerport}
NETLAB=$LAB/netlab.sh
# The lab reads peerport's event log lines ("session established", "path
# selected"), which a terminal user does not see by default (the progress
# lines say the same): ask for them, and keep the dependencies as quiet as
# peerport's default does.
export RUST_LOG=${RUST_LOG:-warn,peerport=info,webrtc_ice=off,turn=off,webrtc_util=off,iroh::socket::transports::relay=off,noq::endpoint=off,noq_proto=error,nostr_relay_pool=off}
OUTDIR=${PEERPORT_LAB_OUT:-$ROOT/target/lab}

# Root, the binary, and a machine that can build namespaces; else SKIPPED (exit 0).
# `lab_preflight wire`: also ethtool, for the userspace wire (PPLAB_WIRE=1).
lab_preflight() {
  if [[ ${1:-} == wire ]] && ! command -v ethtool >/dev/null; then
    echo "SKIPPED: the lab's wire needs ethtool (apt-get install ethtool)" >&2
    exit 0
  fi
  if [[ $(id -u) != 0 ]]; then
    echo "SKIPPED: the NAT lab needs root (network namespaces, iptables); CI runs it as root" >&2
    exit 0
  fi
  [[ -x $PP ]] || { echo "error: $PP missing: run cargo build --release first" >&2; exit 1; }
  # Can this machine build the lab at all (namespaces, veth, iptables inside a namespace)?
  preflight() {
    ip netns add $PPLAB-preflight || return 1
    ip -n $PPLAB-preflight link add pf0 type veth peer name pf1 || return 1
    ip netns exec $PPLAB-preflight iptables -w 5 -t nat -A POSTROUTING -o pf0 -j MASQUERADE || return 1
  }
  if ! preflight >/dev/null 2>&1; then
    ip netns del $PPLAB-preflight 2>/dev/null || true
    echo "SKIPPED: this machine cannot create network namespaces, veth pairs or iptables rules (container without CAP_NET_ADMIN?)" >&2
    exit 0
  fi
  ip netns del $PPLAB-preflight
}

# Temporary material (removed, with the lab, on exit): ssh keys, sshd config, Nostr keys.
lab_init() {
  TMP=$(mktemp -d /tmp/pplab.XXXXXX)
  trap '$NETLAB down >/dev/null 2>&1 || true; rm -rf "$TMP"' EXIT
  mkdir -p "$OUTDIR/runs" /run/sshd
  S=$PPLAB-a-host R=$PPLAB-b-host

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
}
log() { echo "[$(date +%T)] $*" >&2; }
now() { date +%s.%N; }

# The embedded rendezvous servers in the internet namespace; sets RELAY, DNS, RELAY_QUIC,
# RELAY_CA, STUN, NOSTR, TURN, TURN_USER and writes the TURN password to $TMP/turnpw.
start_rendezvous() {
  local dir=$1
  ip netns exec $PPLAB-inet "$PP" rendezvous --bind 198.18.0.1 --state "$dir/rendezvous-state" \
    > "$dir/rendezvous.out" 2> "$dir/rendezvous.log" &
  echo $! > "$dir/rendezvous.pid"
  wait_for 15 "$dir/rendezvous.out" '^turn-server' || { log "rendezvous did not start"; return 1; }
  local rv=$dir/rendezvous.out
  RELAY=$(awk '/^relay-url/{print $2}' "$rv"); DNS=$(awk '/^dns-server/{print $2}' "$rv")
  RELAY_QUIC=$(awk '/^relay-quic-port/{print $2}' "$rv"); RELAY_CA=$(awk '/^relay-ca/{print $2}' "$rv")
  STUN=$(awk '/^stun-server/{print $2}' "$rv"); NOSTR=$(awk '/^nostr-relay/{print $2}' "$rv")
  TURN=$(awk '/^turn-server/{print $2}' "$rv"); TURN_USER=$(awk '/^turn-server/{print $4}' "$rv")
  awk '/^turn-server/{print $6}' "$rv" > "$TMP/turnpw"; chmod 600 "$TMP/turnpw"
}

# restart_rendezvous DIR DOWN: stop the rendezvous servers (relay, STUN/TURN, Nostr relay,
# discovery) as a deploy would, wait DOWN seconds, start them again: same ports, certificate
# and TURN password, but every relay connection, TURN allocation and Nostr subscription is gone
restart_rendezvous() {
  local dir=$1 down=$2 pid
  pid=$(cat "$dir/rendezvous.pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  sleep "$down"
  ip netns exec $PPLAB-inet "$PP" rendezvous --bind 198.18.0.1 --state "$dir/rendezvous-state" \
    > "$dir/rendezvous.restarted.out" 2>> "$dir/rendezvous.log" &
  echo $! > "$dir/rendezvous.pid"
  wait_for 15 "$dir/rendezvous.restarted.out" '^turn-server' || log "rendezvous did not restart"
}

# tunnel name -> sender source / receiver target
src_of() { case $1 in ssh) echo tcp://127.0.0.1:22 ;; tcp5201) echo tcp://127.0.0.1:5201 ;; udp5201) echo udp://127.0.0.1:5201 ;; esac; }
tgt_of() { case $1 in ssh) echo tcp://127.0.0.1:2222 ;; tcp5201) echo tcp://127.0.0.1:5201 ;; udp5201) echo udp://127.0.0.1:5201 ;; esac; }

wait_for() {  # wait_for SECONDS FILE REGEX: bounded poll
  local end=$(( SECONDS + $1 ))
  while (( SECONDS < end )); do grep -qE "$3" "$2" 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

ssh_r() {  # ssh_r TIMEOUT CMD...: ssh from the receiver host through the tunnel
  local t=$1; shift
  ip netns exec $R timeout "$t" ssh -p 2222 -i "$TMP/userkey" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=15 -o LogLevel=ERROR \
    root@127.0.0.1 "$@"
}

# start_ticker DIR SECS: an ssh session through the tunnel printing "tick N" every 0.2 s until
# $TMP/stop exists, then "done"; arrival times go to DIR/ticks, ssh's exit code to DIR/ticker.rc.
# Sets TICKER to its pid.
start_ticker() {
  local dir=$1 secs=$2
  rm -f "$TMP/stop"
  ( ssh_r "$secs" "i=0; while [ ! -e $TMP/stop ]; do i=\$((i+1)); echo tick \$i; sleep 0.2; done; echo done" \
      2> "$dir/ticker.err" | while IFS= read -r l; do echo "$(now) $l"; done > "$dir/ticks"
    echo "${PIPESTATUS[0]}" > "$dir/ticker.rc" ) &
  TICKER=$!
}

# ticker_survived DIR: the ticker ended normally with every tick in order
ticker_survived() {
  [[ $(cat "$1/ticker.rc" 2>/dev/null) == 0 ]] && grep -q ' done$' "$1/ticks" \
    && awk '$2=="tick"{ if ($3 != n+1) bad=1; n=$3 } END{ exit bad }' "$1/ticks"
}

# ticker_stall DIR: the longest gap between ticks at the client, seconds
ticker_stall() { awk '{ if (p && $1-p > m) m = $1-p; p = $1 } END{ printf "%.1f", m }' "$1/ticks"; }

# ticker_after DIR T: seconds from T (date +%s.%N) to the first tick that arrived after it
ticker_after() {
  awk -v t="$2" '$2=="tick" && $1 > t { printf "%.1f", $1-t; found=1; exit } END{ if (!found) printf "" }' "$1/ticks"
}

# first_byte_new T: seconds from T until a new TCP connection through the tunnel gets its first
# byte (sshd's banner); retried every 0.2 s while the tunnel refuses or closes, for at most 120 s
first_byte_new() {
  local t=$1 end=$(( SECONDS + 120 ))
  while (( SECONDS < end )); do
    if [[ $(ip netns exec $R timeout 20 bash -c 'exec 3<>/dev/tcp/127.0.0.1/2222 && head -c 4 <&3' 2>/dev/null) == SSH- ]]; then
      awk -v a="$t" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'
      return 0
    fi
    sleep 0.2
  done
}

# ---- start one sender/receiver pair (in the background) ------------------------------------
start_pair() {
  local mode=${1%@*} t=$2 dir=$3 common=() scommon=() rcommon=() turn=()
  # MODE@noturn: the ICE modes without a TURN server (nothing can relay)
  [[ $1 == *@noturn ]] || turn=(--turn-server "$TURN" --turn-user "$TURN_USER" --turn-password-file "$TMP/turnpw")
  case $mode in
    iroh) common=(--relay-url "$RELAY" --relay-quic-port "$RELAY_QUIC" --relay-ca "$RELAY_CA"
              --dns-server "$DNS" --no-mdns --no-portmap) ;;
    iroh-manual) : > "$dir/$t.offer"; : > "$dir/$t.answer"
      common=(--offer-file "$dir/$t.offer" --answer-file "$dir/$t.answer" --stun-server "$STUN" --no-portmap) ;;
    ice) : > "$dir/$t.offer"; : > "$dir/$t.answer"
      common=(--offer-file "$dir/$t.offer" --answer-file "$dir/$t.answer" --stun-server "$STUN" ${STUN2:+--stun-server "$STUN2"} --no-portmap
              ${turn[@]+"${turn[@]}"}) ;;
    nostr) common=(--relay "$NOSTR" --stun-server "$STUN" ${STUN2:+--stun-server "$STUN2"} --no-portmap
              ${turn[@]+"${turn[@]}"})
      scommon=(--nsec-file "$TMP/s-$t.nsec" --peer-npub "$(cat "$TMP/r-$t.npub")")
      rcommon=(--nsec-file "$TMP/r-$t.nsec" --peer-npub "$(cat "$TMP/s-$t.npub")") ;;
  esac
  # the iroh sender keeps its key in a file, so a restarted sender has the same ticket
  [[ $mode == iroh ]] && scommon=(--secret-file "$TMP/s-$t.key")
  local scmd=(ip netns exec $S "$PP" sender "$mode" --source "$(src_of "$t")" "${common[@]}" "${scommon[@]}"
              ${PAIR_EXTRA[@]+"${PAIR_EXTRA[@]}"})
  printf '%q ' "${scmd[@]}" > "$dir/$t.sender.cmd"
  "${scmd[@]}" > "$dir/$t.sender.out" 2> "$dir/$t.sender.log" &
  echo $! > "$dir/$t.spid"
  if [[ $mode == iroh ]]; then
    wait_for 20 "$dir/$t.sender.out" '^ppt1' || { log "no ticket from $t sender"; return 0; }
    rcommon=(--node-id "$(grep -m1 '^ppt1' "$dir/$t.sender.out")")
  else
    sleep 0.3
  fi
  now > "$dir/$t.t0"
  ip netns exec $R "$PP" receiver "$mode" --target "$(tgt_of "$t")" --connect-timeout $CONNECT_TIMEOUT \
    "${common[@]}" "${rcommon[@]}" ${PAIR_EXTRA[@]+"${PAIR_EXTRA[@]}"} \
    > "$dir/$t.receiver.out" 2> "$dir/$t.receiver.log" &
  echo $! > "$dir/$t.rpid"
}

# restart_sender DIR T: kill tunnel T's sender and start it again with the same command line
restart_sender() {
  local dir=$1 t=$2
  kill -9 "$(cat "$dir/$t.spid")" 2>/dev/null || true
  wait "$(cat "$dir/$t.spid")" 2>/dev/null || true
  bash -c "exec $(cat "$dir/$t.sender.cmd")" >> "$dir/$t.sender.out" 2>> "$dir/$t.sender.log" &
  echo $! > "$dir/$t.spid"
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
COTURN_BIN=$(command -v turnserver || echo /usr/bin/turnserver)
start_coturn() {
  local dir=$1
  [[ -x $COTURN_BIN ]] || { log "coturn (turnserver) is not installed: apt-get install coturn"; return 1; }
  COTURN_PW=${COTURN_PW:-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')}
  ip netns exec $PPLAB-inet "$COTURN_BIN" -n --listening-ip 198.18.0.1 --relay-ip 198.18.0.1 \
    --listening-port $COTURN_PORT --min-port 49152 --max-port 65535 --lt-cred-mech \
    --user "peerport:$COTURN_PW" --realm peerport.lab --no-tls --no-dtls --no-tcp-relay --no-cli \
    --verbose --log-file stdout --simple-log --pidfile "$dir/coturn.pid" --userdb "$dir/coturn.db" \
    > "$dir/coturn.log" 2>&1 &
  wait_for 10 "$dir/coturn.log" 'Total (General|UDP) servers|IPv4. UDP listener opened|listener opened on' || true
  sleep 0.3
}

# use_coturn DIR: start coturn and point STUN/TURN at it (the modes' "@coturn" variants)
use_coturn() {
  start_coturn "$1" || return 1
  STUN=198.18.0.1:$COTURN_PORT TURN=turn:198.18.0.1:$COTURN_PORT TURN_USER=peerport
  echo "$COTURN_PW" > "$TMP/turnpw"
}

# restart_coturn DIR DOWN: stop coturn (every allocation is gone), wait DOWN s, start it again
restart_coturn() {
  local dir=$1 down=$2 pid
  pid=$(cat "$dir/coturn.pid" 2>/dev/null) && kill "$pid" 2>/dev/null || true
  local end=$(( SECONDS + 10 ))
  while [[ -n ${pid:-} ]] && kill -0 "$pid" 2>/dev/null && (( SECONDS < end )); do sleep 0.1; done
  sleep "$down"
  mv "$dir/coturn.log" "$dir/coturn.before-restart.log"
  start_coturn "$dir" || log "coturn did not restart"
}


# run_checked RESULT_JSON ARGS...: run_case ARGS, and once more when RESULT_JSON misses $EXPECT
# (a busy machine can stretch a timeout); the second result is the one reported
run_checked() {
  local res=$1; shift
  run_case "$@"
  if [[ -n $(jq -s "$EXPECT" "$res" 2>/dev/null || echo unreadable) ]]; then
    log "   expectation missed; running the case once more"
    run_case "$@"
  fi
}

# readme_table NAME FILE: put FILE (a Markdown table) into the top-level README between
# <!-- NAME:begin --> and <!-- NAME:end --> (tables are written by the scripts, not typed)
readme_table() {
  python3 - "$ROOT/README.md" "$2" "$1" <<'PY'
import sys
readme, table, name = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
s = open(readme).read()
a, b = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
i, j = s.index(a) + len(a), s.index(b)
open(readme, "w").write(s[:i] + "\n" + table + s[j:])
PY
  echo "README $1 table updated from $2" >&2
}
