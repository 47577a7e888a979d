#!/usr/bin/env bash
# sendfile.sh: a 1 GiB file sent over loopback to curl (which discards it), by
#   native    sloop's examples/file_server (zero-copy sendfile on the bridge)
#   fallback  the same with --fallback (read + write through the transport)
#   tokio     bench/refs ref-tokio-file (tokio::io::copy from tokio::fs::File)
#   blocking  bench/ref_blocking_sendfile.py (a blocking sendfile(2) loop, Python)
# for a file of random bytes (page cache warmed first) and a sparse file, ROUNDS times each
# (default 3), servers interleaved within a round. Per run: throughput (GB/s, 10^9 bytes per
# second, from curl's time_total), the server's CPU seconds during the transfer (user and
# system apart, from /proc/PID/stat before and after), its resident set before the transfer
# (VmRSS) and its peak (VmHWM: a fresh server per run, so the peak of start-up plus one
# transfer). The load average is printed with each round: the machine may be shared.
#
#   bash bench/sendfile.sh     (CARGO_TARGET_DIR as for cargo; ROUNDS=3 SIZE_MB=1024
#                               SERVERS="native fallback tokio blocking" KINDS="random sparse")
#
# The files are /tmp/sendfile-bench-{random,sparse} and are deleted at exit. Server on CPU 0,
# curl on CPU 1 (taskset), when there are two.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
target=${CARGO_TARGET_DIR:-$root/target}
rounds=${ROUNDS:-3}
size_mb=${SIZE_MB:-1024}
command -v curl >/dev/null || { echo "curl is not installed"; exit 1; }
(cd "$root" && cargo build --release -q --example file_server) || { echo "cannot build file_server"; exit 1; }
(cd "$here/refs" && cargo build --release -q --bin ref-tokio-file) || { echo "cannot build refs"; exit 1; }
sloop=$target/release/examples/file_server
tokio=/tmp/bench-target/release/ref-tokio-file

random=/tmp/sendfile-bench-random
sparse=/tmp/sendfile-bench-sparse
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  rm -f "$random" "$sparse"
}
trap cleanup EXIT
head -c $((size_mb * 1024 * 1024)) /dev/urandom > "$random"
truncate -s $((size_mb * 1024 * 1024)) "$sparse"

pin_server=(); pin_client=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  pin_server=(taskset -c 0); pin_client=(taskset -c 1)
fi
tck=$(getconf CLK_TCK)
port=$((20000 + RANDOM % 20000))

# cpu PID: "utime stime" in clock ticks (fields 14 and 15 of /proc/PID/stat, after the
# parenthesised command name).
cpu() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12, $13}'; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# run NAME FILE: one server, one transfer; prints a row.
run() {
  local name=$1 file=$2 cmd
  port=$((port + 1))
  case $name in
    native) cmd=("$sloop" "127.0.0.1:$port" "$file") ;;
    fallback) cmd=("$sloop" "127.0.0.1:$port" "$file" --fallback) ;;
    tokio) cmd=("$tokio" --port "$port" --file "$file") ;;
    blocking) cmd=(python3 "$here/ref_blocking_sendfile.py" "$port" "$file") ;;
  esac
  "${pin_server[@]}" "${cmd[@]}" >/dev/null 2>&1 &
  local pid=$!
  pids+=("$pid")
  # Ready once it accepts a connection (closed at once, with no request).
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  sleep 0.2 # let it see that connection close
  local before after rss out
  before=$(cpu "$pid"); rss=$(status_kb "$pid" VmRSS)
  out=$("${pin_client[@]}" curl -s -o /dev/null --max-time 120 -w '%{size_download} %{time_total}' "http://127.0.0.1:$port/")
  after=$(cpu "$pid")
  local hwm; hwm=$(status_kb "$pid" VmHWM)
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  read -r bytes secs <<<"$out"
  read -r u0 s0 <<<"$before"; read -r u1 s1 <<<"$after"
  awk -v n="$name" -v b="$bytes" -v t="$secs" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$tck" \
      -v rss="$rss" -v hwm="$hwm" -v want=$((size_mb * 1024 * 1024)) 'BEGIN {
    ok = (b == want) ? "" : sprintf("  SHORT: %d bytes", b)
    printf "  %-9s %6.2f GB/s  user %5.2f s  sys %5.2f s  rss %6.1f MiB  peak %6.1f MiB%s\n",
      n, b / t / 1e9, u / hz, s / hz, rss / 1024, hwm / 1024, ok }'
}

for kind in ${KINDS:-random sparse}; do
  file=$random; [ $kind = sparse ] && file=$sparse
  echo "== $kind file, $size_mb MiB"
  for r in $(seq "$rounds"); do
    cat "$file" > /dev/null # warm the page cache
    echo " round $r (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    for name in ${SERVERS:-native fallback tokio blocking}; do
      run "$name" "$file"
    done
  done
done
