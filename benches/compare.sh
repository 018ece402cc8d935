#!/usr/bin/env bash
# kiln and the peers (numpy, torch, jax) side by side, with ratios kiln/peer.
#
# Usage: benches/compare.sh [--threads 1,2] [--n 512,1024,2048] [--only W1,W2,W7,W8]
#                           [--libs numpy,torch,jax] [--max-wait SECONDS] [--rounds R]
#                           [--report]
#
#   --threads   thread counts to run (default 1,2); 1 = taskset -c 0, 2 = taskset -c 0,1,
#               with the env vars of ../shared/bench/run_all.py (env_for) for kiln too
#   --n         W1 sizes (default 512,1024,2048)
#   --only      workloads (default W1,W2,W7,W8; W7 is W2's compile time, so it runs W2;
#               W3-W6, the model-file workloads, are measured when named here)
#   --libs      peers (default numpy,torch,jax; torch_compile is accepted, slow)
#   --max-wait  before each measurement, wait at most this long for the other processes
#               on the machine to go idle (run_all.py's wait_for_quiet; default 120)
#   --rounds    repeat the W1/W2 measurements (kiln, then each peer) R times and report
#               each value's median over the rounds (default 1); this machine's speed
#               drifts by tens of percent within minutes, so 3 or more give steadier ratios
#   --report    measure nothing: rebuild the table from the last run's records
#               (rows with no record are left out)
#
# Builds `examples/workloads.rs` in release once, measures the one-core peak
# (../shared/bench/peak.c, built as run.sh builds it), then for each thread count runs
# kiln's W1/W2 and right after each the peers' same workload through
# ../shared/bench/run_all.py (so the peers are measured exactly as BENCHMARKS.md's
# numbers were), then W8 (max RSS: kiln under /usr/bin/time -v, peers via
# `run_all.py --rss`); with W1 at one thread, each round also measures the portable
# f32x4 microkernel (`--isa f32x4`, n=1024) right after peak.c, for its share of the
# 128-bit FMA peak. Prints a markdown table and writes it to bench-results/compare.md;
# raw records go to bench-results/compare/ (kiln.jsonl, peers.jsonl, rss.jsonl, peak.txt,
# logs; a previous run's files are kept with a timestamp suffix).
#
# Needs the peers' venv ($VENV, default ~/.cache/kiln-bench-venv; `bash ../shared/bench/run.sh`
# creates it) and the shared harness at $KILN_SHARED (default <repo>/../shared, or beside the
# main checkout when <repo> is a git worktree), used read-only.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; }

ROOT=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
# ../shared beside the checkout; in a git worktree, beside the main checkout
COMMON=$(cd "$ROOT" && cd "$(git rev-parse --git-common-dir)/.." && pwd)
if [ -n "${KILN_SHARED:-}" ]; then SHARED=$KILN_SHARED
elif [ -d "$ROOT/../shared/bench" ]; then SHARED=$ROOT/../shared
else SHARED=$COMMON/../shared
fi
BENCH=$SHARED/bench
VENV=${VENV:-$HOME/.cache/kiln-bench-venv}
PY=$VENV/bin/python
RESULTS=$ROOT/bench-results
OUT=$RESULTS/compare

threads_list=1,2
n_list=512,1024,2048
only=W1,W2,W7,W8
libs=numpy,torch,jax
max_wait=120
rounds=1
report_only=
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads_list=$2; shift 2 ;;
    --n) n_list=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --libs) libs=$2; shift 2 ;;
    --max-wait) max_wait=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --report) report_only=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done
for t in ${threads_list//,/ }; do
  case "$t" in 1|2) ;; *) echo "--threads: only 1 and 2 (the peers' pinning)" >&2; exit 2 ;; esac
done

has() { case ",$1," in *",$2,"*) return 0 ;; *) return 1 ;; esac; }
# the peers among $libs that run workload $1 (bench.py: numpy only runs W1)
libs_for() {
  local out="" l
  for l in ${libs//,/ }; do
    if [ "$1" = W1 ] && [ "$l" = torch_compile ]; then continue; fi
    if [ "$1" != W1 ] && [ "$l" = numpy ]; then continue; fi
    out=${out:+$out,}$l
  done
  echo "$out"
}

[ -f "$BENCH/run_all.py" ] || { echo "no peers' harness at $BENCH (set KILN_SHARED)" >&2; exit 1; }
if ! "$PY" -c "import numpy, jax, torch, threadpoolctl" 2>/dev/null; then
  echo "the peers' venv $VENV is missing or broken: run bash $BENCH/run.sh once (or set VENV)" >&2
  exit 1
fi
command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }

if [ -z "$report_only" ]; then
mkdir -p "$OUT"
ts=$(date -u +%Y%m%d-%H%M%S)
for f in kiln.jsonl peers.jsonl rss.jsonl peak.txt peak_rounds.txt run.log; do
  if [ -f "$OUT/$f" ]; then mv "$OUT/$f" "$OUT/${f%.*}.$ts.${f##*.}"; fi
done
export BENCH_OUT=$OUT   # run_all.py --rss writes $BENCH_OUT/rss.jsonl
export PYTHONDONTWRITEBYTECODE=1   # the shared harness is read-only
date -u '+%Y-%m-%d %H:%M UTC' > "$OUT/date.txt"
{ lscpu; echo; uname -a; gcc --version | head -1; } > "$OUT/machine.txt"
log() { echo "$@" | tee -a "$OUT/run.log"; }

# ---------------------------------------------------------------- build kiln, once
log "== building examples/workloads.rs (release)"
cd "$ROOT"
KILN=$(cargo build --release --example workloads --message-format=json-render-diagnostics \
  | "$PY" -c 'import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "workloads"
       and m.get("executable")]
print(exe[-1] if exe else "")')
[ -x "$KILN" ] || { echo "could not find the workloads binary" >&2; exit 1; }
git -C "$ROOT" describe --always --dirty > "$OUT/kiln_rev.txt"

# ---------------------------------------------------------------- one-core peak
log "== one-core peak (peak.c, as run.sh builds it)"
gcc -O2 -mavx2 -mfma -ffp-contract=off -o "$OUT/peak" "$BENCH/peak.c"
taskset -c 0 "$OUT/peak" | tee "$OUT/peak.txt" | tee -a "$OUT/run.log"

# ---------------------------------------------------------------- kiln runner
# Runs one kiln command pinned like the peers (taskset + run_all.env_for's thread
# variables), after run_all.wait_for_quiet, and appends a JSON record to kiln.jsonl with
# its key=value output, the max RSS from /usr/bin/time -v (when present) and the CPU
# other processes used while it ran (foreign_cores, as bench.py's Monitor reports it).
KILN_RUN=$(cat <<'PY'
import json, os, resource, subprocess, sys, time
bench, out, max_wait, threads, work = sys.argv[1:6]
cmd = sys.argv[6:]
sys.path.insert(0, bench)
import run_all
threads = int(threads)
foreign0, waited = run_all.wait_for_quiet(float(max_wait))
env = run_all.env_for("kiln", threads)
pin = ["taskset", "-c", "0" if threads == 1 else "0,1"]
timev = ["/usr/bin/time", "-v"] if os.access("/usr/bin/time", os.X_OK) else []
def busy():
    v = list(map(int, open("/proc/stat").readline().split()[1:9]))
    return sum(v) - v[3] - v[4] - v[7]
def own():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
b0, c0, t0 = busy(), own(), time.perf_counter()
p = subprocess.run(timev + pin + cmd, env=env, capture_output=True, text=True)
wall = time.perf_counter() - t0
foreign = max(0.0, ((busy() - b0) / os.sysconf("SC_CLK_TCK") - (own() - c0)) / wall)
rec = dict(lib="kiln", work=work, threads=threads, cmd=" ".join(pin + cmd),
           env={k: env.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                         "MKL_NUM_THREADS", "XLA_FLAGS")},
           pre_wait_s=round(waited, 1), pre_wait_foreign_cores=round(foreign0, 3),
           foreign_cores=round(foreign, 3), wall_s=round(wall, 2))
line = [l for l in p.stdout.splitlines() if l.startswith(work + " ")]
if p.returncode != 0 or not line:
    rec.update(failed=True, error=(p.stderr[-1500:] or p.stdout[-1500:]))
else:
    for kv in line[-1].split()[1:]:
        k, v = kv.split("=", 1)
        rec[k] = v if k == "isa" else float(v) if k != "threads" else int(v)
    rec["threads"] = threads
    if "isa" in rec:  # a limited target is its own workload (W1/f32x4)
        rec["work"] = f"{work}/{rec['isa']}"
    rec["line"] = line[-1]
for l in p.stderr.splitlines():
    if "Maximum resident set size" in l:
        rec["time_max_rss_mib"] = round(int(l.split(":")[1]) / 1024, 1)
with open(out, "a") as f:
    f.write(json.dumps(rec) + "\n")
msg = ("FAILED: " + " / ".join(rec["error"].strip().splitlines()[-2:])) if rec.get("failed") else rec["line"]
print(f"kiln {msg}  (foreign {foreign:.2f} cores; pre-wait {waited:.0f}s)", flush=True)
PY
)
kiln() {  # kiln THREADS WORK ARGS...
  local t=$1 w=$2; shift 2
  "$PY" -c "$KILN_RUN" "$BENCH" "$OUT/kiln.jsonl" "$max_wait" "$t" "$w" "$KILN" "$w" "$@" \
    2>&1 | tee -a "$OUT/run.log"
}
peers() {  # peers THREADS WORK LIBS [N]
  local t=$1 w=$2 l=$3 n=${4:-}
  [ -n "$l" ] || return 0
  "$PY" "$BENCH/run_all.py" --only "$w" --threads "$t" --libs "$l" ${n:+--n "$n"} \
    --max-wait "$max_wait" --raw "$OUT/peers.jsonl" 2>&1 | tee -a "$OUT/run.log"
}

# ---------------------------------------------------------------- W1, W2 (and W7)
for round in $(seq "$rounds"); do
[ "$rounds" -gt 1 ] && log "==== round $round of $rounds"
for t in ${threads_list//,/ }; do
  if has "$only" W1; then
    for n in ${n_list//,/ }; do
      log "== W1 n=$n threads=$t"
      kiln "$t" W1 --threads "$t" --n "$n"
      peers "$t" W1 "$(libs_for W1)" "$n"
    done
    if [ "$t" = 1 ]; then
      # the portable f32x4 microkernel against the 128-bit FMA peak measured just before
      log "== W1 n=1024 threads=1 isa=f32x4, after the one-core peak"
      taskset -c 0 "$OUT/peak" | tee -a "$OUT/peak_rounds.txt" | grep -F '(b)' | tee -a "$OUT/run.log"
      kiln 1 W1 --threads 1 --n 1024 --isa f32x4
    fi
  fi
  if has "$only" W2 || has "$only" W7; then
    log "== W2 threads=$t"
    kiln "$t" W2 --threads "$t"
    peers "$t" W2 "$(libs_for W2)"
  fi
  for w in W3 W4 W5 W6; do
    if has "$only" "$w"; then
      log "== $w threads=$t"
      kiln "$t" "$w" --threads "$t"
      peers "$t" "$w" "$(libs_for "$w")"
    fi
  done
done
done

# ---------------------------------------------------------------- W8
if has "$only" W8; then
  log "== W8 max RSS (20 W2 steps, 1-thread settings, taskset -c 0)"
  kiln 1 W8 --threads 1
  "$PY" "$BENCH/run_all.py" --rss 2>&1 | tee -a "$OUT/run.log"
fi

fi  # measurements

# ---------------------------------------------------------------- the table
REPORT=$(cat <<'PY'
import json, os, re, sys
out, only, threads, ns, libs = sys.argv[1:6]
only = only.split(","); threads = [int(t) for t in threads.split(",")]
ns = [int(n) for n in ns.split(",")]; libs = libs.split(",")
def jsonl(name):
    p = os.path.join(out, name)
    return [json.loads(l) for l in open(p) if l.strip()] if os.path.exists(p) else []
runs = {}   # every record of a key in this run: one per round
for r in jsonl("kiln.jsonl") + jsonl("peers.jsonl"):
    runs.setdefault((r["lib"], r["work"], r.get("n") or 0, r["threads"]), []).append(r)
rounds = max((len(v) for v in runs.values()), default=0)
FIELDS = {"W1": ("gflops", "gflops_median"), "W1/f32x4": ("gflops",),
          "W2": ("median_ms", "median_s"), "W3": ("median_ms", "median_s"),
          "W4": ("median_ms", "median_s"), "W5": ("median_ms", "median_s"),
          "W6": ("median_ms", "median_s")}
def median_record(rs):
    """The record with the median value (the lower middle) of its workload's measure."""
    good = [r for r in rs if not r.get("failed")]
    if not good:
        return rs[-1]
    fields = FIELDS.get(good[0]["work"], ())
    field = next((f for f in fields if good[0].get(f) is not None), None)
    if field is None:
        return good[-1]
    good.sort(key=lambda r: r[field])
    return good[(len(good) - 1) // 2]
recs = {key: median_record(rs) for key, rs in runs.items()}
rss = {}
for r in jsonl("rss.jsonl"):
    rss[(r["lib"], r["what"])] = r
def read(name):
    p = os.path.join(out, name)
    return open(p).read().strip() if os.path.exists(p) else "?"
peak = {}
for line in read("peak.txt").splitlines():
    m = re.match(r"(.+?)\s+median\s+([\d.]+)", line)
    if m:
        peak[m.group(1).strip()] = float(m.group(2))
model = next((l.split(":", 1)[1].strip() for l in read("machine.txt").splitlines()
              if l.startswith("Model name")), "?")
flags = next((l for l in read("machine.txt").splitlines() if l.startswith("Flags")), "")
isa = "AVX-512" if " avx512f" in flags else ("AVX2 + FMA" if " avx2" in flags else "no AVX2")

NA = "—"
def val(r, key, scale=1.0, flag=True):
    """(text, number) of r[key]*scale; ⚠ when other processes used > 0.2 cores."""
    if r is None:
        return NA, None
    if r.get("failed"):
        return "FAILED", None
    v = r.get(key)
    if v is None:
        return NA, None
    v *= scale
    warn = " ⚠" if flag and (r.get("foreign_cores") or 0) > 0.2 else ""
    return (f"{v:.1f}" if v >= 10 else f"{v:.2f}") + warn, v
def ratio(k, p):
    if k is None or p is None or p == 0:
        return NA
    q = k / p
    return f"{q:.2f}" if q >= 0.1 else f"{q:.2g}"

rows = []
def row(label, t, kiln, peers):
    if all(c[0] == NA for c in [kiln] + peers):
        return  # not measured in this run (--report with other options)
    cells = [label, str(t), kiln[0]] + [p[0] for p in peers]
    cells += [ratio(kiln[1], p[1]) for p in peers]
    rows.append("| " + " | ".join(cells) + " |")

peer_libs = [l for l in libs if l in ("numpy", "torch", "jax", "torch_compile")]
for t in threads:
    if "W1" in only:
        for n in ns:
            k = val(recs.get(("kiln", "W1", n, t)), "gflops")
            ps = [val(recs.get((l, "W1", n, t)), "gflops_median") for l in peer_libs]
            row(f"W1 n={n}, GFLOP/s", t, k, ps)
    if "W2" in only:
        k = val(recs.get(("kiln", "W2", 0, t)), "median_ms")
        ps = [val(recs.get((l, "W2", 0, t)), "median_s", 1e3) for l in peer_libs]
        row("W2 ms/step", t, k, ps)
    for w, what in (("W3", "LeNet train step"), ("W4", "conv2d forward"),
                    ("W5", "LSTM fwd+bwd"), ("W6", "transformer block fwd+bwd")):
        if w in only:
            k = val(recs.get(("kiln", w, 0, t)), "median_ms")
            ps = [val(recs.get((l, w, 0, t)), "median_s", 1e3) for l in peer_libs]
            row(f"{w} {what}, ms", t, k, ps)
    if "W7" in only:
        k = val(recs.get(("kiln", "W2", 0, t)), "compile_ms")
        ps = [val(recs.get((l, "W2", 0, t)), "first_call_s", 1e3) if l in ("jax", "torch_compile")
              else (NA, None) for l in peer_libs]
        row("W7 compile W2, ms", t, k, ps)
if "W8" in only:
    kr = recs.get(("kiln", "W8", 0, 1))
    # RSS does not depend on the load: no ⚠
    k = val(kr, "time_max_rss_mib" if kr and kr.get("time_max_rss_mib") else "max_rss_mib", flag=False)
    ps = []
    for l in peer_libs:
        r = rss.get((l, "W2 x20 steps"))
        ps.append((f"{r['max_rss_mib']:.1f}", r["max_rss_mib"]) if r and r.get("max_rss_mib")
                  else (NA, None))
    row("W8 max RSS, MiB", 1, k, ps)

o = []
o.append("## kiln vs peers, side by side (benches/compare.sh)\n")
o.append(f"- date: {read('date.txt')}; kiln {read('kiln_rev.txt')}")
o.append(f"- CPU (lscpu): {model}, {os.cpu_count()} CPUs, {isa}")
pk = lambda k: f"{peak[k]:.1f}" if k in peak else "?"
o.append(f"- one-core peak (peak.c, gcc -O2 -mavx2 -mfma -ffp-contract=off, taskset -c 0): "
         f"256-bit FMA {pk('(a) FP32 256-bit FMA x12 acc')} GFLOP/s, "
         f"128-bit FMA {pk('(b) FP32 128-bit FMA x12 acc')} GFLOP/s"
         + (" (this CPU has AVX-512, which peak.c does not measure: 512-bit kernels can "
            "exceed this)" if isa == "AVX-512" else ""))
vers = {}
for r in recs.values():
    for k in ("numpy", "torch", "jax"):
        if isinstance(r.get("info"), dict) and r["info"].get(k):
            vers[k] = r["info"][k]
if vers:
    o.append("- peers: " + ", ".join(f"{k} {v}" for k, v in sorted(vers.items())))
o.append("- pinning: 1 thread = taskset -c 0, 2 threads = taskset -c 0,1, thread env vars of "
         "run_all.py for every process (kiln: --threads N); kiln and each peer run one after "
         "the other, in the same run\n")
o.append("| workload | threads | kiln | " + " | ".join(peer_libs) + " | "
         + " | ".join(f"kiln/{l}" for l in peer_libs) + " |")
o.append("|" + "---|" * (3 + 2 * len(peer_libs)))
o += rows
o.append("")
o.append(f"Medians (of each run's median, over {rounds} round(s)). Ratios: W1 = kiln GFLOP/s ÷ peer GFLOP/s (≥ 1.0 is a win); W2, W7, W8 = "
         "kiln ÷ peer (≤ 1.0 is a win). W7: kiln = median of 9 compiles of the W2 train step "
         "(graph → callable code); peer = first call of the jitted/compiled step (cold compile "
         "+ one step). W8: max RSS of a process running 20 W2 steps at one thread (kiln: "
         "/usr/bin/time -v; peers: run_all.py --rss). ⚠ = other processes used > 0.2 cores "
         "while it was measured (value suspect).")
f4 = sorted(r["gflops"] for r in runs.get(("kiln", "W1/f32x4", 1024, 1), [])
            if not r.get("failed"))
peaks128 = sorted(float(m.group(1)) for m in re.finditer(
    r"\(b\) FP32 128-bit FMA x12 acc\s+median\s+([\d.]+)", read("peak_rounds.txt")))
if "W1" in only and f4 and peaks128:
    f4m, pkm = f4[(len(f4) - 1) // 2], peaks128[(len(peaks128) - 1) // 2]
    o.append(f"\nkiln's portable f32x4 microkernel (`W1 --threads 1 --n 1024 --isa f32x4`, "
             f"the path for hosts without AVX2): {f4m:.1f} GFLOP/s, {f4m / pkm:.2f} of the "
             f"128-bit FMA peak measured just before it ({pkm:.1f} GFLOP/s, peak.c (b)); "
             f"medians over {len(f4)} round(s), each round "
             + ", ".join(f"{g:.1f}" for g in sorted(f4)) + ".")
if "W8" in only and kr and not kr.get("failed"):
    o.append(f"kiln W8: arena {kr.get('arena_mib', 0):.2f} MiB, VmHWM printed by the example "
             f"{kr.get('max_rss_mib', 0):.1f} MiB.")
print("\n".join(o))
PY
)
"$PY" -c "$REPORT" "$OUT" "$only" "$threads_list" "$n_list" "$libs" | tee "$RESULTS/compare.md"
echo
echo "written to ${RESULTS#"$ROOT"/}/compare.md (raw records in ${OUT#"$ROOT"/}/)"
