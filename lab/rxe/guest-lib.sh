# guest-lib.sh - helpers of the soft-RoCE guest scripts (sourced, bash).
# Needs guest.env loaded (NODE, HOST4, PEER4, ...) and RES (the results dir).

# PERFTEST (guest.env, ROCE_RXE_PERFTEST): a directory holding another
# perftest's ib_write_bw and ib_write_lat; "": the system's.
IB_WRITE_BW=${PERFTEST:+$PERFTEST/}ib_write_bw
IB_WRITE_LAT=${PERFTEST:+$PERFTEST/}ib_write_lat

log() { echo "[$NODE $(cut -d' ' -f1 /proc/uptime)] $*"; }
die() { log "FATAL: $*"; exit 1; }
now() { date +%s.%N; }

# ifname_by_mac MAC: the guest's NIC names depend on probe order; the MACs are ours.
ifname_by_mac() {
  local d
  for d in /sys/class/net/*; do
    [ "$(cat "$d/address")" = "$1" ] && { basename "$d"; return 0; }
  done
  return 1
}

# gid_value ADDR: the GID sysfs shows for an address (IPv4 is v4-mapped).
gid_value() {
  local a=$1 l r g out="" i n
  if [[ $a != *:* ]]; then
    # shellcheck disable=SC2086
    printf '0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x\n' ${a//./ }
    return
  fi
  if [[ $a == *::* ]]; then l=${a%%::*} r=${a#*::}; else l=$a r=; fi
  local -a L=() R=() G=()
  [ -n "$l" ] && IFS=: read -ra L <<<"$l"
  [ -n "$r" ] && IFS=: read -ra R <<<"$r"
  n=$((8 - ${#L[@]} - ${#R[@]}))
  G=("${L[@]}")
  for ((i = 0; i < n; i++)); do G+=(0); done
  G+=("${R[@]}")
  for g in "${G[@]}"; do out+=$(printf '%04x:' "0x$g"); done
  echo "${out%:}"
}

# rd VAR FILE: read a sysfs value into VAR without a fork (forks are slow
# under TCG, and the GID table has hundreds of entries); "" when unreadable.
rd() { read -r "$1" 2>/dev/null <"$2" || printf -v "$1" ''; }

# gid_index ADDR: the RoCE v2 GID index of a rail address, found by value
# (indexes are not stable across address changes). Fails when there is none.
gid_index() {
  local want i g t p=/sys/class/infiniband/rxe0/ports/1
  want=$(gid_value "$1")
  for ((i = 0; ; i++)); do
    [ -e "$p/gids/$i" ] || return 1
    rd g "$p/gids/$i"
    [ "$g" = "$want" ] || continue
    rd t "$p/gid_attrs/types/$i"
    [ "$t" = "RoCE v2" ] && { echo "$i"; return 0; }
  done
}

# counters: this guest's RDMA and rail packet counters, one JSON object.
counters() {
  local hw=/sys/class/infiniband/rxe0/ports/1/hw_counters st=/sys/class/net/rail0/statistics s r tx rx
  rd s $hw/sent_pkts; rd r $hw/rcvd_pkts; rd tx $st/tx_packets; rd rx $st/rx_packets
  printf '{"rxe_sent_pkts":%s,"rxe_rcvd_pkts":%s,"rail_tx_packets":%s,"rail_rx_packets":%s}\n' "${s:-null}" "${r:-null}" "${tx:-null}" "${rx:-null}"
}

# status_ok: the agent's rail 0 has its addresses and routing (and the link is up).
status_ok() {
  curl -sf -m 5 http://127.0.0.1:9487/v1/status 2>/dev/null | jq -e '
    [.rails[]? | select(.rail == 0) | .conditions[] | select(.status == "True") | .type] as $t
    | ($t | index("AddressesReady")) and ($t | index("RoutingReady")) and ($t | index("LinkUp"))' >/dev/null || return 1
}

# wait_for SECONDS WHAT CMD...: poll CMD every half second; CMD's exit
# status 2 means "never": give up at once.
wait_for() {
  local limit=$1 what=$2 t0 rc
  shift 2
  t0=$SECONDS
  while :; do
    rc=0
    "$@" || rc=$?
    ((rc == 0)) && break
    ((rc != 2)) || { log "gave up waiting for $what"; return 1; }
    ((SECONDS - t0 < limit)) || { log "timed out after ${limit}s waiting for $what"; return 1; }
    sleep 0.5
  done
  log "$what after $((SECONDS - t0))s"
}

# dump_agent PREFIX: the agent's /v1/status and /metrics into the results.
dump_agent() {
  curl -s -m 10 http://127.0.0.1:9487/v1/status >"$RES/$1-status.json" || true
  curl -s -m 10 http://127.0.0.1:9487/metrics >"$RES/$1-metrics.txt" || true
}

# start_agent CONFIG: roce-agent run in the background, its pid in
# /run/agent.pid (the driver restarts it with another config).
start_agent() {
  "$BIN/roce-agent" --config "$1" run >>"$RES/agent.log" 2>&1 &
  echo $! >/run/agent.pid
}

# stop_agent: SIGTERM, and wait until it is gone (it holds the state lock).
stop_agent() {
  local pid i
  read -r pid </run/agent.pid || return 0
  kill "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    [ -e "/proc/$pid" ] || return 0
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
}

# agent_ok: converged, or 2 ("give up") once the agent exited.
agent_ok() {
  local pid
  read -r pid </run/agent.pid
  [ -e "/proc/$pid" ] || { log "roce-agent exited: $(tail -5 "$RES/agent.log")"; return 2; }
  status_ok
}
