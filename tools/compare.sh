#!/usr/bin/env bash
# compare.sh: ipckit against bare system calls, in the same minutes.
#
#   tools/compare.sh [REPEATS] [DURATION_MS]      (defaults: 5 and 300)
#
# For each repeat and each wait strategy (block, spin), runs
#   ipc bench MECHS --sizes 64 --raw --wait W --json ...
# (ipckit and std's bare calls, round for round) and then tools/pingpong.c
# (plain C, written without ipckit) for each mechanism, so every figure of
# one repeat comes from the same few seconds. Prints, per mechanism and
# wait, the medians over the repeats of the 64-byte round trip p50 and of
# the ratios ipckit/raw and ipckit/C, with the range of the ratios.
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
secs=$(python3 -c "print($duration_ms * 3 / 1000)")

for r in $(seq "$repeats"); do
    for wait in block spin; do
        "$ipc" bench "${mechs[@]}" --sizes 64 --raw --wait "$wait" \
            --duration-ms "$duration_ms" --json "$work/ipc-$wait-$r.json" >/dev/null
        for m in "${mechs[@]}"; do
            "$work/pingpong" "$m" "$wait" 64 "$secs" >>"$work/c-$wait-$r.txt"
        done
    done
    echo "repeat $r of $repeats done" >&2
done

python3 - "$work" "$repeats" "${mechs[@]}" <<'EOF'
import json, re, statistics, sys

work, repeats, mechs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows = {}  # (mech, wait) -> lists
for wait in ("block", "spin"):
    for r in range(1, repeats + 1):
        d = json.load(open(f"{work}/ipc-{wait}-{r}.json"))
        c = {}
        for line in open(f"{work}/c-{wait}-{r}.txt"):
            m = re.match(r"(\S+) 64 B \S+ \(C\): .* p50 (\d+) ns", line)
            if m:
                c[m.group(1)] = int(m.group(2))
        for res in d["results"]:
            key = (res["mechanism"], wait)
            row = rows.setdefault(key, {"ipc": [], "raw": [], "c": [], "vs_raw": [], "vs_c": []})
            p50 = res["rtt_ns"]["p50"]
            row["ipc"].append(p50)
            if res.get("raw_rtt_ns"):
                row["raw"].append(res["raw_rtt_ns"]["p50"])
                row["vs_raw"].append(res["vs_raw"])
            if res["mechanism"] in c:
                row["c"].append(c[res["mechanism"]])
                row["vs_c"].append(p50 / c[res["mechanism"]])

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
