#!/usr/bin/env bash
# Tests what packaging/image/build.sh wrote (`make image-test`): opens each
# image archive as a registry or a runtime would, without podman or docker.
#
#   dist/roce-agent-image_<ver>_<arch>.tar  the config (architecture,
#       entrypoint, command, env, OCI labels, digests of config and layers),
#       then the files of its layers: the agent for the right machine, the
#       probe tools (ib_write_bw, ib_write_lat, rping), ip and tc on the
#       image's PATH, the verbs providers (libmlx5, librxe), the dynamic
#       loader, the CA bundle, the dpkg status; no shell, no device nodes;
#       every ELF file's libraries present in the image. Then it runs them
#       from the unpacked tree: chroot for the host's architecture,
#       qemu-user (qemu-aarch64 -L) for the other: roce-agent version and
#       inventory (on testdata/sysfs/dgx-h100), ib_write_bw --help,
#       ib_write_lat --help, rping -h, ip -V, tc -V, and the loader's
#       --list of every verbs provider.
#   dist/roce-agent-image_<ver>.oci.tar     the multi-arch index: one entry per
#       architecture, every blob's digest, the same config as the archive of
#       that architecture, layers that unpack to its diff_ids.
#
# Then, where podman is installed, `podman load` of each archive (in storage
# of its own) as a consumer's check of the formats. Prints the sizes and
# ends with "image: N passed, N failed". Root for the chroot (else the runs
# are skipped); qemu-user for the foreign arch; jq and binutils (readelf).
#
# Environment: VERSION, ARCHES, DIST, IMAGE, SOURCE_DATE_EPOCH as for build.sh.
# shellcheck disable=SC2016 # the single-quoted $ are jq's
set -euo pipefail
cd "$(dirname "$0")/../.."

ARCHES=${ARCHES:-amd64 arm64}
DIST=${DIST:-dist}
IMAGE=${IMAGE:-ghcr.io/roce-agent/roce-agent}

die() { echo "packaging/image/test.sh: $*" >&2; exit 1; }
for tool in jq readelf; do
  command -v $tool >/dev/null || die "$tool not found: apt-get install jq binutils"
done

VERSION=$(packaging/version.sh)
ver=${VERSION#v}
tag=${ver//+/_}
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) || die "not a git checkout: set SOURCE_DATE_EPOCH (and VERSION)"
fi
DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
hostarch=$(dpkg --print-architecture 2>/dev/null || go env GOHOSTARCH)

work=$(mktemp -d "${TMPDIR:-/var/tmp}/roce-agent-image-test.XXXXXX")
trap 'rm -rf "$work"' EXIT

pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
skipped() { skip=$((skip + 1)); echo "skip $*"; }
# check DESC CMD...: CMD's exit status decides; its output is shown on failure.
check() {
  local desc=$1; shift
  if "$@" >"$work/out" 2>&1; then ok "$desc"; else bad "$desc"; sed 's/^/     | /' "$work/out" | tail -20; fi
}
# expect DESC PATTERN CMD...: CMD's output (stdout and stderr, whatever its
# exit status: usage texts often exit non-zero) holds the fixed string PATTERN.
expect() {
  local desc=$1 pat=$2; shift 2
  "$@" >"$work/out" 2>&1 || true
  if grep -qF -- "$pat" "$work/out"; then ok "$desc"; else
    bad "$desc: no \"$pat\" in the output"; sed 's/^/     | /' "$work/out" | tail -20
  fi
}
jqt() { jq -e "$@" >/dev/null; } # jq as a test
# e_machine of an ELF file: 62 x86-64, 183 aarch64; "" when not ELF.
elf_machine() {
  [ "$(head -c4 "$1" 2>/dev/null | od -An -tx1 | tr -d ' \n')" = 7f454c46 ] || return 0
  od -An -tu2 -j18 -N2 "$1" | tr -d ' \n'
}
# resolve ROOT PATH: PATH inside ROOT with its symlinks followed inside ROOT.
resolve() {
  local root=$1 p=$2 n=0 l
  while [ -L "$root$p" ] && [ $n -lt 20 ]; do
    l=$(readlink "$root$p")
    case "$l" in /*) p=$l ;; *) p=$(dirname "$p")/$l ;; esac
    n=$((n + 1))
  done
  echo "$root$(realpath -m -s "$p")"
}
human() { numfmt --to=iec --suffix=B "$1"; }

declare -A config_digest diff_ids
sizes=()
for arch in $ARCHES; do
  echo "--- linux/$arch"
  case "$arch" in
    amd64) machine=62 machine_name='Advanced Micro Devices X86-64' triplet=x86_64-linux-gnu qarch=x86_64 loader=/lib64/ld-linux-x86-64.so.2 ;;
    arm64) machine=183 machine_name=AArch64 triplet=aarch64-linux-gnu qarch=aarch64 loader=/lib/ld-linux-aarch64.so.1 ;;
    *) die "unsupported architecture $arch" ;;
  esac
  f=$DIST/roce-agent-image_${ver}_${arch}.tar
  if [ ! -f "$f" ]; then bad "$f: missing (packaging/image/build.sh)"; continue; fi
  a=$work/$arch/archive R=$work/$arch/rootfs
  mkdir -p "$a" "$R"
  tar -xf "$f" -C "$a"

  # The archive and its config.
  check "one image, tagged $IMAGE:$tag" jqt --arg t "$IMAGE:$tag" 'length == 1 and .[0].RepoTags == [$t]' "$a/manifest.json"
  cfgname=$(jq -r '.[0].Config' "$a/manifest.json")
  cfg=$a/$cfgname
  check "config digest" test "$(sha256sum <"$cfg" | cut -d' ' -f1).json" = "$cfgname"
  config_digest[$arch]=sha256:${cfgname%.json}
  check "architecture $arch, os linux" jqt --arg a "$arch" '.architecture == $a and .os == "linux"' "$cfg"
  check 'entrypoint ["/usr/bin/roce-agent"], cmd ["run"]' \
    jqt '.config.Entrypoint == ["/usr/bin/roce-agent"] and .config.Cmd == ["run"]' "$cfg"
  check "env ROCE_AGENT_CONFIG=/etc/roce-agent/config.yaml" \
    jqt '.config.Env | index("ROCE_AGENT_CONFIG=/etc/roce-agent/config.yaml") != null' "$cfg"
  check "env PATH with /usr/sbin, /usr/bin, /sbin, /bin" \
    jqt '.config.Env[] | select(startswith("PATH=")) | ltrimstr("PATH=") | split(":") | contains(["/usr/sbin", "/usr/bin", "/sbin", "/bin"])' "$cfg"
  check "runs as root (no user set)" jqt '(.config.User // "") == "" or .config.User == "root" or .config.User == "0"' "$cfg"
  check "labels org.opencontainers.image.{title,version,created,source,licenses}" \
    jqt --arg v "$VERSION" --arg d "$DATE" '.config.Labels as $l |
      $l["org.opencontainers.image.title"] == "roce-agent" and $l["org.opencontainers.image.version"] == $v and
      $l["org.opencontainers.image.created"] == $d and
      ($l["org.opencontainers.image.source"] | startswith("https://")) and
      $l["org.opencontainers.image.licenses"] == "Apache-2.0"' "$cfg"
  rev=$(jq -r '.config.Labels["org.opencontainers.image.revision"]' "$cfg")
  check "label org.opencontainers.image.revision $rev is this checkout's commit $COMMIT" test "$rev" = "$COMMIT"
  check "created $DATE (SOURCE_DATE_EPOCH)" jqt --arg d "$DATE" '.created == $d' "$cfg"
  mapfile -t layers < <(jq -r '.[0].Layers[]' "$a/manifest.json")
  mapfile -t ids < <(jq -r '.rootfs.diff_ids[]' "$cfg")
  diff_ids[$arch]="${ids[*]}"
  check "two layers (Debian, agent) matching the config's diff_ids" test "${#layers[@]}" = 2 -a "${#ids[@]}" = 2
  for i in "${!layers[@]}"; do
    check "layer $((i + 1)) digest" test "sha256:$(sha256sum <"$a/${layers[$i]}" | cut -d' ' -f1)" = "${ids[$i]:-}"
    check "layer $((i + 1)): no whiteouts" bash -c "! tar -tf '$a/${layers[$i]}' | grep -q '\.wh\.'"
    tar -xf "$a/${layers[$i]}" -C "$R"
  done

  # The files.
  b=$R/usr/bin/roce-agent
  check "/usr/bin/roce-agent: an executable for linux/$arch" test -x "$b" -a "$(elf_machine "$b")" = "$machine"
  for t in ib_write_bw ib_write_lat ib_read_bw ib_send_bw rping; do
    check "/usr/bin/$t: an executable for linux/$arch" test -x "$R/usr/bin/$t" -a "$(elf_machine "$R/usr/bin/$t")" = "$machine"
  done
  path=$(jq -r '.config.Env[] | select(startswith("PATH=")) | ltrimstr("PATH=")' "$cfg")
  declare -A found=()
  for t in ip tc; do
    found[$t]=
    IFS=: read -ra dirs <<<"$path"
    for d in "${dirs[@]}"; do
      if [ -x "$(resolve "$R" "$d/$t")" ] && [ -f "$(resolve "$R" "$d/$t")" ]; then found[$t]=$d/$t; break; fi
    done
    check "$t on the image's PATH (${found[$t]:-none})" test -n "${found[$t]}" -a "$(elf_machine "$(resolve "$R" "${found[$t]:-/x}")")" = "$machine"
  done
  interp=$(readelf -lW "$b" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
  check "the dynamic loader $interp (the agent's interpreter) for linux/$arch" \
    test "$interp" = "$loader" -a -f "$(resolve "$R" "$loader")" -a "$(elf_machine "$(resolve "$R" "$loader")")" = "$machine"
  check "libc.so.6" test -f "$(resolve "$R" "/lib/$triplet/libc.so.6")"
  providers=()
  for p in mlx5 mlx4 rxe; do
    drv=$R/etc/libibverbs.d/$p.driver
    so=$(find "$R/usr/lib/$triplet/libibverbs" -name "lib$p-rdmav*.so" 2>/dev/null | head -1 || true)
    check "verbs provider $p: $(basename "${so:-none}") and $p.driver naming it" \
      bash -c "test -f '$so' && grep -qxE 'driver (/usr/lib/$triplet/libibverbs/lib)?$p' '$drv'"
    [ -n "$so" ] && providers+=("${so#"$R"}")
  done
  check "CA bundle /etc/ssl/certs/ca-certificates.crt (>= 100 roots)" \
    test "$(grep -c 'BEGIN CERTIFICATE' "$R/etc/ssl/certs/ca-certificates.crt" 2>/dev/null || echo 0)" -ge 100
  check "/etc/passwd has root" grep -q '^root:x:0:0:' "$R/etc/passwd"
  check "/etc/os-release is Debian" grep -q '^ID=debian' "$(resolve "$R" /etc/os-release)"
  st=$R/var/lib/dpkg/status
  # librdmacm1 is librdmacm1t64 from Debian 13 on (the 64-bit time_t transition)
  for p in perftest rdmacm-utils iproute2 ibverbs-providers libibverbs1 'librdmacm1(t64)?' libc6 ca-certificates; do
    check "dpkg status: $p installed" grep -qxE "Package: $p" "$st"
  done
  check "dpkg status: every package for $arch or all" \
    bash -c "! grep '^Architecture:' '$st' | grep -vqE '^Architecture: ($arch|all)$'"
  check "no shell (/bin/sh, /bin/bash, /bin/dash)" \
    bash -c "for s in /bin/sh /bin/bash /bin/dash /usr/bin/sh /usr/bin/bash; do [ ! -e \"\$(realpath -m '$R'\$s)\" ] || exit 1; done"
  check "no device nodes" test -z "$(find "$R" \( -type b -o -type c \) -print -quit)"
  check "no man pages, docs only copyright" \
    bash -c "[ ! -e '$R/usr/share/man' ] && [ -z \"\$(find '$R/usr/share/doc' -type f ! -name copyright -print -quit)\" ]"

  # Every ELF file: for this machine, and each of its DT_NEEDED libraries in
  # the image (lib, usr/lib and their multiarch directories).
  declare -A have=()
  for d in /lib/$triplet /usr/lib/$triplet /lib /usr/lib; do
    [ -d "$R$d" ] || continue
    for l in "$R$d"/*; do
      if [ -e "$l" ]; then have[${l##*/}]=1; fi
    done
  done
  # One readelf for all files (the agent twice, so that every batch of
  # xargs names more than one file and readelf heads each with "File:"; it
  # fails on the files that are not ELF).
  find "$R" -type f -print0 | { xargs -0 readelf -hdW "$b" 2>/dev/null || true; } | awk '
    /^File: / { f = substr($0, 7); files[f] = 1 }
    /^  Machine:/ { sub(/^  Machine: +/, ""); m[f] = $0 }
    /\(NEEDED\)/ { match($0, /\[.*\]/); n[f] = n[f] " " substr($0, RSTART + 1, RLENGTH - 2) }
    END { for (f in m) print f "\t" m[f] "\t" n[f] }' >"$work/elf"
  nelf=0 wrong=() missing=()
  while IFS=$'\t' read -r e m needed; do
    nelf=$((nelf + 1))
    [ "$m" = "$machine_name" ] || wrong+=("${e#"$R"}: $m")
    for lib in $needed; do
      [ -n "${have[$lib]:-}" ] || missing+=("${e#"$R"} needs $lib")
    done
  done <"$work/elf"
  check "$nelf ELF files, all for linux/$arch" test "${#wrong[@]}" = 0 -a "$nelf" -gt 50
  [ "${#wrong[@]}" = 0 ] || printf '     | %s\n' "${wrong[@]}" | head -10
  check "every DT_NEEDED library in the image" test "${#missing[@]}" = 0
  [ "${#missing[@]}" = 0 ] || printf '     | %s\n' "${missing[@]}" | head -20

  # Running them: chroot on this architecture, qemu-user on the other.
  run=()
  if [ "$arch" = "$hostarch" ]; then
    if [ "$(id -u)" = 0 ]; then run=(chroot "$R"); fi
  elif command -v "qemu-$qarch" >/dev/null; then
    run=("qemu-$qarch" -L "$R")
  fi
  if [ "${#run[@]}" = 0 ]; then
    skipped "running linux/$arch binaries: $([ "$arch" = "$hostarch" ] && echo "chroot needs root" || echo "qemu-$qarch not found (apt-get install qemu-user)")"
  else
    # qemu-user opens the program on the host and everything else under -L.
    at() { if [ "${run[0]}" = chroot ]; then echo "$1"; else resolve "$R" "$1"; fi; }
    expect "roce-agent version ($VERSION, linux/$arch)" "platform: linux/$arch" "${run[@]}" "$(at /usr/bin/roce-agent)" version
    expect "roce-agent version names $VERSION" "$VERSION" "${run[@]}" "$(at /usr/bin/roce-agent)" version
    mkdir -p "$R/tmp/sysfs"
    cp -a testdata/sysfs/dgx-h100/sys "$R/tmp/sysfs/"
    expect "roce-agent inventory --sysfs-root (testdata dgx-h100): mlx5_0" "mlx5_0" \
      "${run[@]}" "$(at /usr/bin/roce-agent)" inventory --sysfs-root /tmp/sysfs/sys
    rm -rf "$R/tmp/sysfs"
    expect "ib_write_bw --help" "start a server and wait for connection" "${run[@]}" "$(at /usr/bin/ib_write_bw)" --help
    # the agent binds perftest's out-of-band connection to the rail address
    # with it (docs/probes.md): without it a pod's probes follow the main table
    expect "ib_write_bw has --bind_source_ip (perftest 23.07+)" "--bind_source_ip" "${run[@]}" "$(at /usr/bin/ib_write_bw)" --help
    expect "ib_write_lat has --bind_source_ip (perftest 23.07+)" "--bind_source_ip" "${run[@]}" "$(at /usr/bin/ib_write_lat)" --help
    expect "ib_write_lat --help" "start a server and wait for connection" "${run[@]}" "$(at /usr/bin/ib_write_lat)" --help
    expect "rping -h" "rping -c" "${run[@]}" "$(at /usr/bin/rping)" -h
    expect "ip -V" "iproute2" "${run[@]}" "$(at "${found[ip]:-/bin/ip}")" -V
    expect "tc -V" "iproute2" "${run[@]}" "$(at "${found[tc]:-/sbin/tc}")" -V
    for so in "${providers[@]}"; do
      # --inhibit-cache: the default search path only, as in the container
      # (the image has no ld.so.cache).
      "${run[@]}" "$(at "$loader")" --inhibit-cache --list "$so" >"$work/out" 2>&1 && rc=0 || rc=$?
      if [ "$rc" = 0 ] && ! grep -q 'not found' "$work/out"; then ok "$(basename "$so"): every library loads"; else
        bad "$(basename "$so"): $loader --list failed ($rc)"; sed 's/^/     | /' "$work/out"
      fi
    done
  fi

  npkg=$(grep -c '^Package:' "$st" || true)
  sizes+=("linux/$arch: archive $(human "$(stat -c %s "$f")"), unpacked $(human "$(du -sb "$R" | cut -f1)") in $(find "$R" | wc -l) files, $npkg Debian packages, agent $(human "$(stat -c %s "$b")")")
done

# The multi-arch OCI archive.
echo "--- multi-arch index"
oci=$DIST/roce-agent-image_${ver}.oci.tar
if [ ! -f "$oci" ]; then
  bad "$oci: missing (packaging/image/build.sh)"
else
  o=$work/oci
  mkdir -p "$o"
  tar -xf "$oci" -C "$o"
  check "oci-layout 1.0.0" jqt '.imageLayoutVersion == "1.0.0"' "$o/oci-layout"
  check "index.json: one index, named $tag" \
    jqt --arg t "$tag" '.manifests | length == 1 and .[0].mediaType == "application/vnd.oci.image.index.v1+json" and .[0].annotations["org.opencontainers.image.ref.name"] == $t' "$o/index.json"
  bad_blobs=0
  for blob in "$o"/blobs/sha256/*; do
    [ "$(sha256sum <"$blob" | cut -d' ' -f1)" = "$(basename "$blob")" ] || bad_blobs=$((bad_blobs + 1))
  done
  check "every blob's digest ($(find "$o/blobs/sha256" -type f | wc -l) blobs)" test "$bad_blobs" = 0
  blob() { echo "$o/blobs/sha256/${1#sha256:}"; }
  idx=$(blob "$(jq -r '.manifests[0].digest' "$o/index.json")")
  n=0
  for arch in $ARCHES; do n=$((n + 1)); done
  check "the index: one image per architecture ($ARCHES)" \
    jqt --argjson n "$n" '.manifests | length == $n' "$idx"
  compressed=()
  for arch in $ARCHES; do
    d=$(jq -r --arg a "$arch" '.manifests[] | select(.platform.architecture == $a and .platform.os == "linux") | .digest' "$idx")
    if [ -z "$d" ]; then bad "the index has no linux/$arch"; continue; fi
    m=$(blob "$d")
    check "linux/$arch: the config of roce-agent-image_${ver}_${arch}.tar" \
      jqt --arg c "${config_digest[$arch]:-}" '.config.digest == $c' "$m"
    mapfile -t ls < <(jq -r '.layers[].digest' "$m")
    read -ra ids <<<"${diff_ids[$arch]:-}"
    same=1
    for i in "${!ls[@]}"; do
      [ "sha256:$(gzip -dc <"$(blob "${ls[$i]}")" | sha256sum | cut -d' ' -f1)" = "${ids[$i]:-}" ] || same=0
    done
    check "linux/$arch: gzip layers unpack to the config's diff_ids" test "$same" = 1 -a "${#ls[@]}" = "${#ids[@]}"
    compressed+=("linux/$arch $(human "$(jq '[.layers[].size] | add' "$m")")")
  done
  sizes+=("multi-arch OCI archive: $(human "$(stat -c %s "$oci")") (compressed layers: ${compressed[*]})")
fi

# A real consumer: podman load (in storage of its own) of each archive.
if command -v podman >/dev/null && [ "$(id -u)" = 0 ]; then
  echo "--- podman load"
  P=(podman --root "$work/podman/storage" --runroot "$work/podman/run" --storage-driver vfs --events-backend none)
  for arch in $ARCHES; do
    f=$DIST/roce-agent-image_${ver}_${arch}.tar
    [ -f "$f" ] || continue
    check "podman load $(basename "$f")" "${P[@]}" load -q -i "$f"
    check "  as $IMAGE:$tag for linux/$arch" \
      test "$("${P[@]}" image inspect "$IMAGE:$tag" --format '{{.Os}}/{{.Architecture}} {{.Config.Entrypoint}}' 2>&1)" = "linux/$arch [/usr/bin/roce-agent]"
    "${P[@]}" rmi -f "$IMAGE:$tag" >/dev/null 2>&1 || true
  done
  if [ -f "$oci" ] && [[ " $ARCHES " == *" $hostarch "* ]]; then
    check "podman load $(basename "$oci") (picks linux/$hostarch from the index)" "${P[@]}" load -q -i "$oci"
    check "  linux/$hostarch" test "$("${P[@]}" image inspect "$tag" --format '{{.Os}}/{{.Architecture}}' 2>&1)" = "linux/$hostarch"
  fi
else
  skipped "podman load: no podman, or not root"
fi

echo "--- sizes"
printf '%s\n' "${sizes[@]}"
echo
echo "image: $pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ]
