#!/usr/bin/env bash
# compare.sh: ipckit against bare system calls, in the same minutes.
#
#   tools/compare.sh [REPEATS] [DURATION_MS]      (defaults: 5 and 300)
#
# For each repeat, each wait strategy (block, spin) and each mechanism, runs
# tools/pingpong.c (plain C, written without ipckit), then
#   ipc bench MECH --sizes 64 --raw --wait W --json ...
# (ipckit and std's bare calls, round for round), then the C program again,
# so that each bench figure has C figures from the seconds around it: the
# VM this was written on switches between a fast and a slow state every few
# seconds (a 64-byte pipe round trip of 1.0 or 2.2 us), and only figures
# taken that close together can be compared. Prints, per mechanism and
# wait, the medians over the repeats of the 64-byte round trip p50 and of
# the ratios ipckit/raw (same rounds) and ipckit/C (the mean of the C runs
# before and after), with the range of the ratios.
#
# Not run by CI: it needs a quiet machine and a few minutes. Needs cc and
# python3.
set -euo pipefail

repeats=${1:-5}
duration_ms=${2:-300}
mechs=(pipe fifo unix unix-dgram unix-seq tcp udp mq sysv-mq)

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cc -O2 -o "$work/pingpong" "$root/tools/pingpong.c"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" -p ipc
ipc=$root/target/release/ipc
secs=$(python3 -c "print($duration_ms / 1000)")

for r in $(seq "$repeats"); do
    for wait in block spin; do
        for m in "${mechs[@]}"; do
            c1=$("$work/pingpong" "$m" "$wait" 64 "$secs")
            "$ipc" bench "$m" --sizes 64 --raw --wait "$wait" \
                --duration-ms "$duration_ms" --json "$work/ipc-$wait-$m-$r.json" >/dev/null
            c2=$("$work/pingpong" "$m" "$wait" 64 "$secs")
            printf '%s\n%s\n' "$c1" "$c2" >>"$work/c-$wait-$m-$r.txt"
        done
    done
    echo "repeat $r of $repeats done" >&2
done

python3 - "$work" "$repeats" "${mechs[@]}" <<'EOF'
import json, re, statistics, sys

work, repeats, mechs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}  # (mech, wait) -> lists
for wait in ("block", "spin"):
    for m in mechs:
        for r in range(1, repeats + 1):
            d = json.load(open(f"{work}/ipc-{wait}-{m}-{r}.json"))
            c = []
            for line in open(f"{work}/c-{wait}-{m}-{r}.txt"):
                hit = re.match(r"(\S+) 64 B \S+ \(C\): .* p50 (\d+) ns", line)
                if hit:
                    c.append(int(hit.group(2)))
            for res in d["results"]:
                row = rows.setdefault((m, wait), {"ipc": [], "raw": [], "c": [], "vs_raw": [], "vs_c": []})
                p50 = res["rtt_ns"]["p50"]
                row["ipc"].append(p50)
                if res.get("raw_rtt_ns"):
                    row["raw"].append(res["raw_rtt_ns"]["p50"])
                    row["vs_raw"].append(res["vs_raw"])
                if c:
                    mean_c = sum(c) / len(c)
                    row["c"].append(mean_c)
                    row["vs_c"].append(p50 / mean_c)

def med(v, fmt):
    return fmt % statistics.median(v) if v else "-"

def ratio(v):
    if not v:
        return "-"
    return "%.2f (%.2f-%.2f)" % (statistics.median(v), min(v), max(v))

print(f"64 B round trip, p50 in ns, median of {repeats} repeats; ratios: median (range)")
print("| mechanism | wait | ipckit | raw (--raw) | C | ipckit/raw | ipckit/C |")
print("|---|---|---:|---:|---:|---|---|")
for wait in ("block", "spin"):
    for m in mechs:
        row = rows.get((m, wait))
        if not row:
            continue
        print(f"| {m} | {wait} | {med(row['ipc'], '%.0f')} | {med(row['raw'], '%.0f')} | "
              f"{med(row['c'], '%.0f')} | {ratio(row['vs_raw'])} | {ratio(row['vs_c'])} |")
EOF
