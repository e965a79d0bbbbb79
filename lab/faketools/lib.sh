# Shared code of the lab's stand-ins for perftest (ib_write_bw,
# ib_write_lat) and rdma-core's rping (docs/lab.md, "Probes"). The lab has
# no RDMA device, so these play the real tools' captured output
# (probe/testdata, soft-RoCE) instead of measuring anything; what they do
# check is that the rail path the real tool would use is there:
#
#   - the GID the agent picked (-d DEVICE -i PORT -x INDEX) is a RoCE v2
#     GID of the host's fixture sysfs tree, and its address is the rail's;
#   - the peer answers a ping sent from that rail address (the RDMA
#     traffic's source), through the tenant's leaf namespace (its VRF):
#     a peer in another tenant, or a rail whose leaf port is elsewhere,
#     fails the probe with the real tool's own failure line.
#
# POSIX sh (dash): the agent runs tools with PATH=/usr/sbin:/usr/bin:/sbin:/bin
# and LC_ALL=C only. lab.env, next to the scripts, sets SYSFS_ROOT (the
# host's fixture tree).

here=${0%/*}
. "$here/lab.env"

# Seconds a one-shot server lives: the real ones wait for their client,
# run one test and exit.
server_life=0.2

fail() {
	printf '%s\n' "$@" >&2
	exit 1
}

# port_dir DEVICE PORT: the port's directory in the fixture tree.
port_dir() {
	printf '%s/class/infiniband/%s/ports/%s' "$SYSFS_ROOT" "$1" "$2"
}

# gid_addr DIR INDEX: the address of RoCE v2 GID INDEX of the port at DIR
# (IPv4 for an IPv4-mapped GID, IPv6 as the table writes it); fails for
# another type or an empty entry.
gid_addr() {
	[ -r "$1/gids/$2" ] && [ -r "$1/gid_attrs/types/$2" ] || return 1
	typ=''
	read -r typ <"$1/gid_attrs/types/$2" || [ -n "$typ" ] || return 1
	[ "$typ" = "RoCE v2" ] || return 1
	gid=''
	read -r gid <"$1/gids/$2" || [ -n "$gid" ] || return 1
	case $gid in
	0000:0000:0000:0000:0000:0000:0000:0000) return 1 ;;
	0000:0000:0000:0000:0000:ffff:*)
		v4=${gid#0000:0000:0000:0000:0000:ffff:}
		hi=${v4%:*} lo=${v4#*:}
		printf '%d.%d.%d.%d\n' "0x${hi%??}" "0x${hi#??}" "0x${lo%??}" "0x${lo#??}"
		;;
	*) printf '%s\n' "$gid" ;;
	esac
}

# first_v4 DIR: the address of the port's lowest IPv4 RoCE v2 GID.
first_v4() {
	i=0
	while [ -r "$1/gids/$i" ]; do
		if a=$(gid_addr "$1" "$i"); then
			case $a in
			*:*) ;;
			*)
				printf '%s\n' "$a"
				return 0
				;;
			esac
		fi
		i=$((i + 1))
	done
	return 1
}

# reaches SRC DST: DST answers a ping from SRC within a second.
reaches() {
	ping -n -q -c 1 -W 1 -I "$1" "$2" >/dev/null 2>&1
}

# perftest TOOL ARGS...: ib_write_bw or ib_write_lat. A server (no host
# argument) lives a moment and exits 0; a client checks the rail path and
# prints the capture.
perftest() {
	tool=$1
	shift
	dev='' ibport=1 gidx='' port=18515 host='' src=''
	# a modern perftest (23.07 and later): --bind_source_ip binds the
	# out-of-band socket; --source_ip is the raw-Ethernet option, taken
	# and ignored by the RDMA tests, as in every perftest
	if [ "${1:-}" = --help ]; then
		printf 'Usage:\n  %s            start a server and wait for connection\n  %s <host>     connect to server at <host>\n\nOptions:\n' "$tool" "$tool"
		printf '      --bind_source_ip  Source IP of the interface used for connection establishment. By default taken from routing table.\n'
		exit 1
	fi
	while [ $# -gt 0 ]; do
		case $1 in
		-d | -i | -x | -p | -s | -n | -q | -D | -m | --source_ip | --bind_source_ip)
			[ $# -ge 2 ] || fail "$tool: option $1 needs a value"
			case $1 in
			-d) dev=$2 ;;
			-i) ibport=$2 ;;
			-x) gidx=$2 ;;
			-p) port=$2 ;;
			--bind_source_ip) src=$2 ;;
			esac
			shift 2
			;;
		--bind_source_ip=*)
			src=${1#*=}
			shift
			;;
		-*) shift ;;
		*)
			host=$1
			shift
			;;
		esac
	done
	dir=$(port_dir "$dev" "$ibport")
	[ -n "$dev" ] && [ -d "$SYSFS_ROOT/class/infiniband/$dev" ] || fail " IB device $dev not found" " Unable to find the Infiniband/RoCE device"
	if [ -z "$host" ]; then
		sleep "$server_life"
		exit 0
	fi
	gaddr=$(gid_addr "$dir" "$gidx") || fail " Failed to query GID index $gidx of $dev port $ibport" "Couldn't get context for the device"
	# The out-of-band exchange (TCP to the host argument, IPv4) leaves
	# from --bind_source_ip when given; without it the kernel picks the route
	# from the main table, as real perftest does, which on a host with
	# per-rail policy routing does not reach the peer's rail.
	if [ -n "$src" ]; then
		reaches "$src" "$host" || fail "Couldn't connect to $host:$port"
	else
		ping -n -q -c 1 -W 1 "$host" >/dev/null 2>&1 || fail "Couldn't connect to $host:$port"
	fi
	case $tool:$gaddr in
	ib_write_bw:*) cat "$here/ib_write_bw.client.txt" ;;
	ib_write_lat:*:*) cat "$here/ib_write_lat_v6.client.txt" ;;
	*) cat "$here/ib_write_lat_v4.client.txt" ;;
	esac
	exit 0
}

# rping ARGS...: -s is a server (lives a moment, exits 0); -c a client
# that checks -a from -I and prints -C pings of the capture.
rping() {
	mode='' bind='' addr='' count=5
	while [ $# -gt 0 ]; do
		case $1 in
		-a | -I | -C | -p | -S | -P)
			[ $# -ge 2 ] || fail "rping: option $1 needs a value"
			case $1 in
			-a) addr=$2 ;;
			-I) bind=$2 ;;
			-C) count=$2 ;;
			esac
			shift 2
			;;
		-s | -c)
			mode=$1
			shift
			;;
		*) shift ;;
		esac
	done
	case $mode in
	-s)
		sleep "$server_life"
		exit 0
		;;
	-c) ;;
	*) fail "rping: -s or -c" ;;
	esac
	[ -n "$addr" ] || fail "rping: -a needed"
	if [ -n "$bind" ]; then
		reaches "$bind" "$addr" || fail "cma event RDMA_CM_EVENT_ADDR_ERROR, error -110" "waiting for addr/route resolution state 1"
	elif ! ping -n -q -c 1 -W 1 "$addr" >/dev/null 2>&1; then
		fail "cma event RDMA_CM_EVENT_ADDR_ERROR, error -110" "waiting for addr/route resolution state 1"
	fi
	awk -v n="$count" 'NR <= 5 { l[NR-1] = $0 }
		END { for (i = 0; i < n; i++) { s = l[i % 5]; sub(/rdma-ping-[0-9]+/, "rdma-ping-" i, s); print s } }' "$here/rping.client.txt"
	cat "$here/rping.client.stderr.txt" >&2
	exit 0
}
