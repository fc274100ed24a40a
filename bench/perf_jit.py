"""perf's samples of a Numba step, by function: JIT frames named from the step's own symbol table.

perf cannot name Numba's compiled code (its frames are "[unknown]" in anonymous
memory). ``bench_bias.py --cost-loop ... --jit-symbols FILE`` writes where each
function of the compiled step starts; this script gives every sample in the
JIT region the function whose start is the nearest below it, and every other
sample its library symbol (OpenBLAS's kernels, malloc, ...). Numba inlines
little across its functions, so most of the step's helpers keep their names.

    perf record -D 22000 -o basic.data -- python bench/bench_bias.py --cost-loop basic 30 --dim 100 \\
        --jit-symbols basic.sym
    perf record -D 22000 -o kl.data -- python bench/bench_bias.py --cost-loop kl 30 --dim 100 \\
        --jit-symbols kl.sym
    # each run prints its CPU seconds per 20,000 positives; give them after each pair:
    python bench/perf_jit.py basic.data basic.sym 0.054 kl.data kl.sym 0.067

One run: each function's share of the samples and its milliseconds per unit
(the share times the seconds given). Two runs: both, and the second's
milliseconds minus the first's, largest first: where the added time goes.
"""
from __future__ import annotations

import argparse
import bisect
import collections
import re
import subprocess

# Numba writes the punctuation of a qualified name (<locals>, dots) as _XX, its hex code
_ESCAPE = re.compile(r"_(2[0-9a-f]|3[a-f]|40|5[b-f]|60|7[b-e])")


def readable(mangled: str) -> str:
    """``_ZN5kgnum7kernels6memory11gather_rowsB2v1...`` -> ``kgnum.kernels.memory.gather_rows``."""
    name = mangled.split(".", 1)[1] if mangled.startswith(("cfunc.", "cpython.")) else mangled
    if not name.startswith("_ZN"):
        return name
    parts, i = [], 3
    while i < len(name) and name[i].isdigit():
        j = i
        while name[j].isdigit():
            j += 1
        n = int(name[i:j])
        parts.append(name[j:j + n])
        i = j + n
    text = ".".join(p for p in parts if p != "cpython")
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def shares(data: str, symbols: str) -> tuple[collections.Counter, int]:
    table = sorted((int(a, 16), readable(n.strip())) for a, n in (line.split(None, 1) for line in open(symbols)))
    starts = [a for a, _ in table]
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True,
                         check=True).stdout
    counts, total = collections.Counter(), 0
    for line in out.splitlines():
        fields = line.split(None, 1)
        if not fields:
            continue
        total += 1
        ip, sym = int(fields[0], 16), (fields[1].strip() if len(fields) > 1 else "[unknown]")
        if sym == "[unknown]":
            k = bisect.bisect_right(starts, ip) - 1
            sym = table[k][1] if k >= 0 and ip - starts[k] < 1 << 20 else "[unknown]"
        counts[sym.replace(".<locals>.", ".")] += 1
    return counts, total


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="DATA SYMBOLS SECONDS, once or twice")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    if len(args.runs) not in (3, 6):
        parser.error("give DATA SYMBOLS SECONDS for one run, or for two")
    runs = []
    for k in range(0, len(args.runs), 3):
        data, symbols, seconds = args.runs[k:k + 3]
        counts, total = shares(data, symbols)
        runs.append({s: 1e3 * float(seconds) * c / total for s, c in counts.items()})
        print(f"{data}: {total:,} samples, {float(seconds):.4f} s a unit")
    names = set().union(*runs)
    if len(runs) == 1:
        (ms,) = runs
        print(f"{'ms':>8s} {'share':>6s}  function")
        for s in sorted(names, key=lambda s: -ms[s])[:args.top]:
            print(f"{ms[s]:8.2f} {100 * ms[s] / sum(ms.values()):5.1f}%  {s}")
        return
    a, b = runs
    print(f"{'first ms':>9s} {'second ms':>10s} {'added':>8s}  function")
    for s in sorted(names, key=lambda s: -(b.get(s, 0) - a.get(s, 0)))[:args.top]:
        print(f"{a.get(s, 0):9.2f} {b.get(s, 0):10.2f} {b.get(s, 0) - a.get(s, 0):+8.2f}  {s}")
    print(f"{sum(a.values()):9.2f} {sum(b.values()):10.2f} {sum(b.values()) - sum(a.values()):+8.2f}  (all)")


if __name__ == "__main__":
    main()
