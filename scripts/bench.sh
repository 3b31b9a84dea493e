#!/usr/bin/env bash
# The whole benchmark, one command: builds, starts a PostgreSQL of its own, measures
# lease-agent at several sizes and the alternatives, and writes every figure, the plots and a
# summary table.
#
#   scripts/bench.sh [--short] [--out DIR]          (default DIR: bench/results/)
#
# 1. Builds lease-agent, scale_bench, alt_bench and failover_bench into build/ (BUILD_DIR
#    overrides; JOBS parallel jobs, default 2). alt_bench missing or not building: skipped
#    with a line saying so, and no comparison with etcd or ZooKeeper.
# 2. Starts PostgreSQL with scripts/pg.sh in a temp dir (LEASE_AGENT_PG_CONF:
#    shared_preload_libraries = 'pg_stat_statements', max_connections = 700,
#    pg_stat_statements.track = top), creates the extension, applies the schema
#    (lease-agent schema apply). It is stopped at the end however the run ends.
# 3. build/scale_bench (bench/scale_bench.cpp: steady-state cost over a 10 s window, then
#    takeovers: kill, term, stop, switchover, the agents kept running) at 3, 10, 100 and 300
#    agents in one cluster and at 100 clusters x 3: 20 runs per scenario at 3 and 10 agents,
#    10 at the others, so that the whole run stays under about 40 minutes. Then
#    build/alt_bench --json DIR/alt.json (etcdctl lock/elect, a PostgreSQL advisory lock,
#    ZooKeeper's election recipe on a standalone server of its own), and
#    build/notify_cost --json DIR/notify.json (what a NOTIFY per renewal, as schema 4 sent,
#    would cost PostgreSQL at the same sizes).
# 4. Merges everything into DIR/result.json: the machine (uname -a, nproc, CPU model, memory),
#    the date (UTC), the versions (lease-agent, postgres, etcd, zookeeper, gnuplot, kernel), the
#    settings, every scale_bench JSON, alt.json, the ratios alternative/ours of medians and
#    maxima (term vs etcd-lock-term, kill vs etcd-lock-kill, stop vs etcd-lock-stop; and the
#    advisory lock's and ZooKeeper's), and every figure against its target of DESIGN.md ("Figures it must
#    reach") as pass/fail booleans. Plots (gnuplot, PNG) into DIR: takeover_distributions.png
#    (sorted samples per scenario, ours at each size and the alternatives', log y),
#    takeover_vs_agents.png (median and max against the agent count), cost_vs_agents.png
#    (statements and commits per agent per renew, PostgreSQL CPU per 100 agents, WAL bytes
#    per renewal, agent RSS and CPU). A markdown summary on stdout and in DIR/summary.md.
#    Each program's output: DIR/scale-LABEL.log, DIR/alt.log; the build's: DIR/build.log.
#
# --short: 3 and 10 agents only, 2 runs per scenario, a 3 s window, alt_bench --runs 2: a
# few minutes, for CI. In both modes the exit status reflects only a broken run (a program
# that crashed or failed: an agent not up, a missing takeover, two masters at once), never
# a figure that misses its target (those are the booleans in result.json).
# Exit 0 all ran; 1 a run broke; 2 bad arguments or the build/PostgreSQL failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

usage() {
  echo "usage: $0 [--short] [--out DIR]" >&2
  exit 2
}
short=
out=bench/results
while [ $# -gt 0 ]; do
  case "$1" in
    --short) short=1 ;;
    --out) [ $# -ge 2 ] || usage; out=$2; shift ;;
    --out=*) out=${1#--out=} ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
command -v python3 >/dev/null || { echo "bench.sh: python3 is needed for the report" >&2; exit 2; }
build=${BUILD_DIR:-build}
mkdir -p "$out"
out=$(realpath "$out")
ttl=2s
renew=500ms
if [ -n "$short" ]; then
  sizes="1x3:2 1x10:2"
  window=3s
  alt_runs=2
  size_limit=900
  notify_args=(--sizes 1x3,1x10 --window 2s)
else
  sizes="1x3:20 1x10:20 1x100:10 1x300:10 100x3:10"
  window=10s
  alt_runs=20
  size_limit=2400
  notify_args=(--sizes 1x3,1x10,1x100,1x300,100x3 --window 10s)
fi
# This run's files only: stale ones from an earlier run would be merged.
rm -f "$out"/scale-*.json "$out"/scale-*.log "$out"/alt.json "$out"/alt.log "$out"/notify.json "$out"/notify.log \
  "$out"/result.json \
  "$out"/summary.md "$out"/*.png "$out"/build.log "$out"/pg.log
rm -rf "$out/plot-data"

pgdir=
child=
started_at=$(date +%s)
say() { echo "== $*"; }

# shellcheck disable=SC2317  # called by the traps
cleanup() {
  local rc=$?
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  if [ -n "$pgdir" ]; then
    say "stop PostgreSQL"
    "$root/scripts/pg.sh" stop "$pgdir" >>"$out/pg.log" 2>&1 || rmdir "$pgdir" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs a program bounded by LIMIT seconds, its output into LOG and onto our stdout; sets rc.
run_logged() {
  local limit=$1 log=$2
  shift 2
  : >"$log"
  timeout -k 30 "$limit" "$@" >"$log" 2>&1 &
  child=$!
  tail -n +1 -f --pid="$child" "$log" &
  local tailer=$!
  rc=0
  wait "$child" || rc=$?
  child=
  wait "$tailer" 2>/dev/null || true
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "bench.sh: $(basename "$1") did not end within ${limit}s: stopped" | tee -a "$log"
  fi
}

say "configure and build ($build/)"
if ! { cmake -S "$root" -B "$build" &&
  cmake --build "$build" -j"${JOBS:-2}" --target lease-agent scale_bench failover_bench notify_cost; } >"$out/build.log" 2>&1; then
  tail -n 30 "$out/build.log" >&2
  echo "bench.sh: the build failed; see $out/build.log" >&2
  exit 2
fi
have_alt=
if cmake --build "$build" -j"${JOBS:-2}" --target alt_bench >>"$out/build.log" 2>&1 && [ -x "$build/alt_bench" ]; then
  have_alt=1
else
  say "alt_bench: not built (no bench/alt_bench.cpp or its CMake target, or it does not compile; see" \
    "$out/build.log): skipped, so no comparison with etcd, an advisory lock or ZooKeeper"
fi

say "start PostgreSQL (pg_stat_statements)"
pgdir=$(mktemp -d "${TMPDIR:-/tmp}/lease-agent-bench.XXXXXX")
export LEASE_AGENT_PG_CONF="shared_preload_libraries = 'pg_stat_statements'
max_connections = 700
pg_stat_statements.track = top"
if ! "$root/scripts/pg.sh" start "$pgdir" >/dev/null 2>"$out/pg.log"; then
  cat "$out/pg.log" >&2
  echo "bench.sh: PostgreSQL did not start" >&2
  exit 2
fi
# shellcheck disable=SC1091
. "$pgdir/env"
psql_bin=psql
[ -x /usr/lib/postgresql/15/bin/psql ] && psql_bin=/usr/lib/postgresql/15/bin/psql
if ! "$psql_bin" -X -q -v ON_ERROR_STOP=1 -d "$LEASE_AGENT_TEST_DSN" \
  -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >>"$out/pg.log" 2>&1 ||
  ! "$build/lease-agent" schema apply --dsn "$LEASE_AGENT_TEST_DSN" >>"$out/pg.log" 2>&1; then
  cat "$out/pg.log" >&2
  echo "bench.sh: could not create pg_stat_statements or apply the schema" >&2
  exit 2
fi

if [ -n "$short" ]; then
  say "short run: 3 and 10 agents, 2 runs per scenario, window $window; alt_bench --runs $alt_runs"
else
  say "full run: runs per scenario: 20 at 3 and 10 agents, 10 at 100 and 300 agents and at 100 clusters x 3" \
    "(to keep the whole run under about 40 minutes); window $window; alt_bench --runs $alt_runs"
fi

broken=0
statuses=()
labels=()
for spec in $sizes; do
  label=${spec%%:*}
  runs=${spec##*:}
  clusters=${label%%x*}
  agents=${label##*x}
  say "scale_bench $label: $clusters cluster(s) x $agents agents, $runs runs per scenario"
  run_logged "$size_limit" "$out/scale-$label.log" "$build/scale_bench" --clusters "$clusters" --agents "$agents" \
    --ttl "$ttl" --renew "$renew" --window "$window" --runs "$runs" --scenario kill,term,stop,switchover \
    --json "$out/scale-$label.json" --label "$label"
  labels+=("$label")
  statuses+=("$rc")
  if [ "$rc" -ne 0 ]; then
    broken=1
    say "scale_bench $label: exit status $rc (a broken run; see $out/scale-$label.log)"
  fi
done

alt_rc=skipped
if [ -n "$have_alt" ]; then
  say "alt_bench: etcd's lock and election, a PostgreSQL advisory lock, ZooKeeper's election recipe"
  run_logged 2400 "$out/alt.log" "$build/alt_bench" --runs "$alt_runs" --ttl "$ttl" --json "$out/alt.json"
  alt_rc=$rc
  if [ "$rc" -ne 0 ]; then
    broken=1
    say "alt_bench: exit status $rc (see $out/alt.log)"
  fi
fi

# What a NOTIFY per renewal would cost the database at the same sizes (schema 4 did that;
# schema 5 notifies no renewal): the same connections listening, no agents.
say "notify_cost: what a notification per renewal costs PostgreSQL at the same sizes"
run_logged 900 "$out/notify.log" "$build/notify_cost" "${notify_args[@]}" --rate 2 --pgdata "$pgdir" \
  --json "$out/notify.json"
if [ "$rc" -ne 0 ]; then
  broken=1
  say "notify_cost: exit status $rc (see $out/notify.log)"
fi

say "report: $out/result.json, $out/summary.md, plots"
agent_version=$("$build/lease-agent" --version 2>&1 | head -n 1 || true)
pg_version=$( (/usr/lib/postgresql/15/bin/postgres --version || postgres --version) 2>/dev/null | head -n 1 || true)
etcd_version=$(etcd --version 2>/dev/null | head -n 1 || true)
gnuplot_version=$(gnuplot --version 2>/dev/null | head -n 1 || true)
export BENCH_OUT="$out" BENCH_SHORT="$short" BENCH_TTL="$ttl" BENCH_RENEW="$renew" BENCH_WINDOW="$window" \
  BENCH_SIZES="$sizes" BENCH_ALT_RUNS="$alt_runs" BENCH_ALT_RC="$alt_rc" BENCH_LABELS="${labels[*]}" \
  BENCH_STATUSES="${statuses[*]}" BENCH_AGENT_VERSION="$agent_version" BENCH_PG_VERSION="$pg_version" \
  BENCH_ETCD_VERSION="$etcd_version" BENCH_GNUPLOT_VERSION="$gnuplot_version" \
  BENCH_SECONDS=$(($(date +%s) - started_at))
if ! python3 - <<'PY'; then
import json, math, os, platform, subprocess, sys
from datetime import datetime, timezone

E = os.environ
out = E["BENCH_OUT"]
labels = E["BENCH_LABELS"].split()
statuses = [int(s) for s in E["BENCH_STATUSES"].split()]
ttl_ms = 2000.0
SC = ["kill", "term", "stop", "switchover"]
ALT_FOR = {"kill": "etcd-lock-kill", "term": "etcd-lock-term", "stop": "etcd-lock-stop"}
ADV_FOR = {"kill": "advisory-kill", "term": "advisory-term", "stop": "advisory-stop"}
ZK_FOR = {"kill": "zk-kill", "term": "zk-term", "stop": "zk-stop"}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""


def num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def ratio(a, b):
    a, b = num(a), num(b)
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


cpu_model = ""
mem = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            mem = "%.1f GiB" % (int(line.split()[1]) / 1024 / 1024)
            break
except OSError:
    pass

scale = {}
for label, st in zip(labels, statuses):
    j = load(os.path.join(out, "scale-%s.json" % label))
    scale[label] = {"exit_status": st, "result": j}
ttl_ms = next((float(s["result"]["ttl_ms"]) for s in scale.values() if s["result"]), 2000.0)
alt = load(os.path.join(out, "alt.json"))
alt_sc = (alt or {}).get("scenarios", {})
notify = load(os.path.join(out, "notify.json"))


def tk(label, sc):
    r = scale[label]["result"] or {}
    return (r.get("takeover") or {}).get(sc) or {}


def st(label):
    r = scale[label]["result"] or {}
    return r.get("steady") or {}


ratios, targets = {}, {}
for label in labels:
    ratios[label] = {}
    for sc in ("term", "kill", "stop"):
        ours = tk(label, sc)
        for name in (ALT_FOR[sc], ADV_FOR[sc], ZK_FOR[sc]):
            a = alt_sc.get(name)
            if a is None:
                continue
            ratios[label]["%s_vs_%s" % (sc, name)] = {
                "median_alt_over_ours": ratio(a.get("median"), ours.get("median")),
                "max_alt_over_ours": ratio(a.get("max"), ours.get("max")),
            }

    def le(v, bound):
        v = num(v)
        return None if v is None else bool(v <= bound)

    kill, term, stop, sw, s = tk(label, "kill"), tk(label, "term"), tk(label, "stop"), tk(label, "switchover"), st(label)
    etcd_term = num((alt_sc.get("etcd-lock-term") or {}).get("median"))
    t = {
        "crash_worst_le_ttl_plus_50ms": le(kill.get("max"), ttl_ms + 50),
        "clean_median_below_etcd_lock_term": (None if etcd_term is None or num(term.get("median")) is None
                                              else bool(term["median"] < etcd_term)),
        "clean_worst_le_30ms": le(term.get("max"), 30),
        # The same, to the successor's own first 200 on /master (when traffic can reach it).
        "clean_http_median_below_etcd_lock_term": (None if etcd_term is None or num(term.get("http_median")) is None
                                                   else bool(term["http_median"] < etcd_term)),
        "clean_http_worst_le_30ms": le(term.get("http_max"), 30),
        "stop_new_master_within_ttl_plus_50ms": le(stop.get("max"), ttl_ms + 50),
        "stop_503_at_once_on_resume": (None if not stop else
                                       bool(stop.get("resume_not_503", 1) == 0 and stop.get("resumed_200_samples", 1) == 0)),
        "no_two_200s": (None if not any(tk(label, x) for x in SC) else
                        all(tk(label, x).get("double_200_samples", 0) == 0 for x in SC)),
        "switchover_request_to_term_median_le_10ms": le(sw.get("request_to_term_median"), 10),
        # within the measurement's resolution: one call more or less per agent at the window's edges
        "statements_per_agent_per_renew_le_1": le(s.get("statements_per_agent_per_renew"),
                                                  1.0 + (num(s.get("statements_per_agent_per_renew_resolution")) or 0.0)),
        "agent_rss_le_10mb": le(s.get("agent_rss_mb_max"), 10.0),
        "agent_cpu_le_1pct": le(s.get("agent_cpu_pct_max"), 1.0),
    }
    measured = [v for v in t.values() if v is not None]
    t["all_measured_pass"] = bool(measured) and all(measured)
    t["not_measured"] = [k for k, v in t.items() if v is None]
    targets[label] = t

result = {
    # BENCH_DATE_UTC: the date of the run, when its report is made again from its JSON files.
    "date_utc": E.get("BENCH_DATE_UTC") or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "machine": {"uname": sh("uname -a"), "nproc": os.cpu_count(), "cpu_model": cpu_model, "memory": mem},
    "versions": {"lease-agent": E.get("BENCH_AGENT_VERSION", ""), "postgres": E.get("BENCH_PG_VERSION", ""),
                 "etcd": E.get("BENCH_ETCD_VERSION", ""), "gnuplot": E.get("BENCH_GNUPLOT_VERSION", ""),
                 "zookeeper": ((alt or {}).get("tool versions") or {}).get("zookeeper") or "",
                 "kernel": platform.release()},
    "settings": {"short": bool(E.get("BENCH_SHORT")), "ttl": E["BENCH_TTL"], "renew": E["BENCH_RENEW"],
                 "window": E["BENCH_WINDOW"],
                 "sizes": {s.split(":")[0]: {"runs_per_scenario": int(s.split(":")[1])} for s in E["BENCH_SIZES"].split()},
                 "alt_bench_runs": int(E["BENCH_ALT_RUNS"]), "alt_bench_exit_status": E["BENCH_ALT_RC"],
                 "postgresql_conf": "shared_preload_libraries = 'pg_stat_statements', max_connections = 700, "
                                    "pg_stat_statements.track = top (scripts/pg.sh: fsync off, synchronous_commit off)",
                 "elapsed_s": int(E.get("BENCH_SECONDS", "0"))},
    "scale": scale,
    "alt": alt,
    "notify_cost": notify,
    "ratios": ratios,
    "targets": targets,
}
with open(os.path.join(out, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
    f.write("\n")

# ---------------------------------------------------------------- plots
pd = os.path.join(out, "plot-data")
os.makedirs(pd, exist_ok=True)


def fmt(v, digits=1):
    v = num(v)
    return "n/a" if v is None else ("%.*f" % (digits, v))


def sig(v):
    v = num(v)
    return "n/a" if v is None else ("%.3g" % v)


def write_sorted(name, samples):
    samples = sorted(x for x in samples if num(x) is not None and x > 0)
    if not samples:
        return None
    path = os.path.join(pd, name + ".dat")
    with open(path, "w") as f:
        n = len(samples)
        for i, x in enumerate(samples):
            f.write("%.4f %.4f\n" % ((i + 0.5) / n, x))
    return path


def q(s):
    return "'" + s.replace("'", "") + "'"


# A panel without data: a blank plot (gnuplot stops a script at "all points undefined").
EMPTY = "set label 1 'no data' at graph 0.45, graph 0.5; plot [1:2] 1 with lines lc rgb '#ffffff' notitle; unset label 1"
gp = ["set terminal pngcairo size 1400,1000 noenhanced font 'Sans,10'", "set grid", "set key top left"]
gp += ["set output " + q(os.path.join(out, "takeover_distributions.png")), "set multiplot layout 2,2 title "
       + q("Takeover times, sorted samples (ttl %d ms): lease-agent at each size, and the alternatives" % ttl_ms)]
for sc in SC:
    series = []
    for label in labels:
        p = write_sorted("dist-%s-%s" % (sc, label), tk(label, sc).get("samples_ms") or [])
        if p:
            series.append("%s using 1:2 with linespoints pt 7 ps 0.6 title %s" % (q(p), q("lease-agent " + label)))
    for name in sorted(alt_sc):
        if name.endswith("-" + sc):
            p = write_sorted("dist-%s-%s" % (sc, name), alt_sc[name].get("samples_ms") or [])
            if p:
                series.append("%s using 1:2 with linespoints pt 5 ps 0.6 dt 2 title %s" % (q(p), q(name)))
    gp += ["set title " + q({"kill": "kill -9 of the master", "term": "SIGTERM (clean stop)",
                             "stop": "SIGSTOP past ttl", "switchover": "switchover"}[sc]),
           "set key center right" if sc == "kill" else "set key top left",
           "set logscale y", "set xlabel 'fraction of runs'", "set ylabel 'ms to the new master'",
           "set xrange [0:1]"]
    gp.append("plot " + ", ".join(series) if series else EMPTY)
gp += ["unset multiplot", "unset logscale y", "set autoscale x", "set key top left"]

# (b) and (c): against the agent count; one line for 1xN, points for MxN with M > 1.
def by_agents(getter):
    single, multi = [], []
    for label in labels:
        r = scale[label]["result"]
        if not r:
            continue
        v = num(getter(label))
        if v is None:
            continue
        (single if r.get("clusters") == 1 else multi).append((r.get("agents"), v, label))
    return sorted(single), multi


def series_for(tag, getter, title, style_single="linespoints pt 7", style_multi="points pt 9 ps 1.5"):
    single, multi = by_agents(getter)
    out_s = []
    if single:
        path = os.path.join(pd, "agents-%s-single.dat" % tag)
        with open(path, "w") as f:
            for a, v, _ in single:
                f.write("%s %s\n" % (a, v))
        out_s.append("%s using 1:2 with %s title %s" % (q(path), style_single, q(title + " (1 cluster)")))
    if multi:
        path = os.path.join(pd, "agents-%s-multi.dat" % tag)
        with open(path, "w") as f:
            for a, v, label in multi:
                f.write("%s %s %s\n" % (a, v, label))
        out_s.append("%s using 1:2 with %s title %s" % (q(path), style_multi, q(title + " (" + ", ".join(m[2] for m in multi) + ")")))
    return out_s


def refline(value, title, target=True):
    v = num(value)
    style = "dt 2 lw 1.5 lc rgb '#d62728'" if target else "dt 3 lw 1.5 lc rgb '#ff7f0e'"
    return ["%g with lines %s title %s" % (v, style, q(title))] if v is not None and v > 0 else []


def panel(title, ylabel, series, logy=False):
    g = ["set title " + q(title), "set ylabel " + q(ylabel), "set xlabel 'agents in all'", "set logscale x",
         "set key below horizontal maxcols 2", "set offsets graph 0.05, graph 0.05, %s" %
         ("0, 0" if logy else "graph 0.08, graph 0.08")]
    g.append("set logscale y" if logy else "unset logscale y")
    g.append("plot " + ", ".join(series) if series else EMPTY)
    return g


gp += ["set output " + q(os.path.join(out, "takeover_vs_agents.png")),
       "set multiplot layout 2,2 title " + q("Takeover time against the number of agents (median and max)")]
REFS = {
    "kill": refline(ttl_ms + 50, "target: worst <= ttl + 50 ms") + refline(
        (alt_sc.get("etcd-lock-kill") or {}).get("median"), "etcd-lock-kill median", False),
    "term": refline(30, "target: worst <= 30 ms") + refline(
        (alt_sc.get("etcd-lock-term") or {}).get("median"), "etcd-lock-term median (target: median below)", False),
    "stop": refline(ttl_ms + 50, "target: new master within ttl + 50 ms") + refline(
        (alt_sc.get("etcd-lock-stop") or {}).get("median"), "etcd-lock-stop median", False),
    "switchover": [],
}
for sc, logy in (("kill", False), ("term", True), ("stop", False), ("switchover", True)):
    ser = (series_for(sc + "-med", lambda l, sc=sc: tk(l, sc).get("median"), sc + " median")
           + series_for(sc + "-max", lambda l, sc=sc: tk(l, sc).get("max"), sc + " max"))
    if sc in ("term", "switchover"):
        # The hand-offs also to the successor's own first 200 on /master (the row names it first).
        ser += series_for(sc + "-http-med", lambda l, sc=sc: tk(l, sc).get("http_median"), sc + " median to /master 200",
                          "linespoints pt 6 dt 4", "points pt 8 ps 1.5")
    gp += panel({"kill": "kill -9", "term": "SIGTERM (clean stop)", "stop": "SIGSTOP past ttl",
                 "switchover": "switchover"}[sc], "ms to the new master", ser + (REFS[sc] if ser else []), logy)
gp += ["unset multiplot"]

gp += ["set output " + q(os.path.join(out, "cost_vs_agents.png")),
       "set multiplot layout 2,2 title " + q("Steady-state cost against the number of agents (renew %s)" % E["BENCH_RENEW"])]
gp += panel("statements and commits per agent per renew", "per agent per renew",
            series_for("stmts", lambda l: st(l).get("statements_per_agent_per_renew"), "statements")
            + series_for("commits", lambda l: st(l).get("commits_per_agent_per_renew"), "commits"))
gp += panel("PostgreSQL CPU (all its processes)", "% of one core",
            series_for("pgcpu100", lambda l: st(l).get("pg_cpu_pct_per_100_agents"), "per 100 agents")
            + series_for("pgcpu", lambda l: st(l).get("pg_cpu_pct_of_core"), "in all"))
gp += panel("WAL per renewal of a lease", "bytes",
            series_for("wal", lambda l: st(l).get("wal_bytes_per_renewal"), "WAL bytes per renewal")
            + series_for("walagent", lambda l: st(l).get("wal_bytes_per_agent_per_renew"), "WAL bytes per agent per renew"),
            logy=True)
gp += panel("each agent: RSS (MB) and CPU (% of a core)", "MB / %",
            series_for("rss", lambda l: st(l).get("agent_rss_mb_max"), "RSS max MB")
            + series_for("pss", lambda l: st(l).get("agent_pss_mb_max"), "Pss max MB")
            + series_for("acpu", lambda l: st(l).get("agent_cpu_pct_max"), "CPU max %"))
gp += ["unset multiplot", "unset output", "set offsets 0, 0, 0, 0"]
gp_path = os.path.join(pd, "plots.gp")
with open(gp_path, "w") as f:
    f.write("\n".join(gp) + "\n")
plots_ok = True
try:
    r = subprocess.run(["gnuplot", gp_path], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        plots_ok = False
        print("bench.sh: gnuplot failed: " + r.stderr.strip().replace("\n", " | ")[:600], file=sys.stderr)
except (OSError, subprocess.TimeoutExpired) as e:
    plots_ok = False
    print("bench.sh: gnuplot: %s" % e, file=sys.stderr)

# ---------------------------------------------------------------- summary
m = result["machine"]
L = []
L.append("## Benchmark: %s (%s)" % (result["date_utc"], "short run" if E.get("BENCH_SHORT") else "full run"))
L.append("")
L.append("`scripts/bench.sh%s` on %s, %s cores, %s; %s; %s; ttl=%s renew=%s, steady-state window %s. "
         "PostgreSQL on loopback with fsync off (scripts/pg.sh). Runs per scenario: %s."
         % (" --short" if E.get("BENCH_SHORT") else "", m["cpu_model"] or "?", m["nproc"], m["memory"],
            result["versions"]["lease-agent"], result["versions"]["postgres"], E["BENCH_TTL"], E["BENCH_RENEW"],
            E["BENCH_WINDOW"], ", ".join("%s at %s" % (v["runs_per_scenario"], k) for k, v in result["settings"]["sizes"].items())))
L.append("")
L.append("Takeover: ms from the fault to a new master in `lease_agent.master`, median / p95 / max (M x N: M clusters "
         "of N agents); for SIGTERM and switchover also to the successor's first 200 on /master.")
L.append("")
L.append("| agents | start-up | kill -9 | SIGTERM | SIGTERM, to /master 200 | SIGSTOP past ttl | switchover | switchover, to /master 200 | switchover request to term (db clock), median | samples with two 200s | unexpected successor | failed runs |")
L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for label in labels:
    r = scale[label]["result"] or {}
    cells = []
    for sc in SC:
        t = tk(label, sc)
        cells.append("%s / %s / %s" % (fmt(t.get("median")), fmt(t.get("p95")), fmt(t.get("max"))) if t else "n/a")
        if sc in ("term", "switchover"):
            cells.append("%s / %s / %s" % (fmt(t.get("http_median")), fmt(t.get("http_p95")), fmt(t.get("http_max")))
                         if t else "n/a")
    dbl = sum(tk(label, sc).get("double_200_samples", 0) for sc in SC)
    unexp = sum(tk(label, sc).get("unexpected_successor", 0) for sc in SC)
    failed = sum(tk(label, sc).get("failed", 0) for sc in SC)
    status = "" if scale[label]["exit_status"] == 0 else " (exit %d)" % scale[label]["exit_status"]
    L.append("| %s%s | %s s | %s | %s | %s | %s | %s | %s | %s | %d | %d | %d |" % (
        label, status, fmt(r.get("startup_s")), *cells,
        fmt(tk(label, "switchover").get("request_to_term_median"), 2), dbl, unexp, failed))
L.append("")
L.append("Steady state (nothing but the agents on the database): per agent and renew, and what PostgreSQL spends.")
L.append("")
L.append("| agents | statements / agent / renew | commits / agent / renew | WAL bytes / renewal | PostgreSQL CPU, % of a core | per 100 agents | agents one core carries | agent RSS MB, median / max | agent Pss MB, median / max | agent CPU %, median / max |")
L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for label in labels:
    s = st(label)
    L.append("| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s / %s | %s / %s |" % (
        label, fmt(s.get("statements_per_agent_per_renew"), 3), fmt(s.get("commits_per_agent_per_renew"), 2),
        fmt(s.get("wal_bytes_per_renewal"), 0), fmt(s.get("pg_cpu_pct_of_core"), 1),
        fmt(s.get("pg_cpu_pct_per_100_agents"), 2), fmt(s.get("agents_per_pg_core"), 0),
        fmt(s.get("agent_rss_mb_median"), 1), fmt(s.get("agent_rss_mb_max"), 1),
        fmt(s.get("agent_pss_mb_median"), 1), fmt(s.get("agent_pss_mb_max"), 1),
        fmt(s.get("agent_cpu_pct_median"), 2), fmt(s.get("agent_cpu_pct_max"), 2)))
L.append("")
if alt_sc:
    L.append("The alternatives on the same machine (`alt_bench`, ttl %s; ms from the fault to the waiter holding the lock):" % E["BENCH_TTL"])
    L.append("")
    L.append("| alternative | runs | median | p95 | max | no takeover | failed |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, a in alt_sc.items():
        L.append("| %s | %s | %s | %s | %s | %s | %s |" % (name, a.get("runs", "?"), fmt(a.get("median")), fmt(a.get("p95")),
                                                        fmt(a.get("max")), a.get("no_takeover", 0), a.get("failed", 0)))
    L.append("")
    L.append("Ratios alternative / lease-agent (above 1: lease-agent is faster), medians and maxima:")
    L.append("")
    L.append("| comparison | " + " | ".join(labels) + " |")
    L.append("| --- |" + " ---: |" * len(labels))
    keys = []
    for label in labels:
        for k in ratios[label]:
            if k not in keys:
                keys.append(k)
    for k in keys:
        row = []
        for label in labels:
            v = ratios[label].get(k) or {}
            row.append("%s / %s" % (sig(v.get("median_alt_over_ours")), sig(v.get("max_alt_over_ours"))))
        L.append("| %s | %s |" % (k.replace("_vs_", " vs "), " | ".join(row)))
    L.append("")
else:
    L.append("No alternatives measured (alt_bench %s)." % ("skipped" if E["BENCH_ALT_RC"] == "skipped" else "failed"))
    L.append("")
if notify and notify.get("sizes"):
    L.append("What a NOTIFY per renewal would cost PostgreSQL (bench/notify_cost: the same number of listening "
             "connections, 2 notifications per cluster per second, one channel per cluster; schema 5 sends none):")
    L.append("")
    L.append("| size | listeners | notifications/s sent (target) | wake-ups/s | PostgreSQL CPU above idle, % of a core |")
    L.append("| --- | ---: | ---: | ---: | ---: |")
    for z in notify["sizes"]:
        L.append("| %sx%s | %s | %s (%s) | %s | %s |" % (
            z.get("clusters"), z.get("agents_per_cluster"), z.get("listeners"),
            fmt(z.get("notifies_per_s_sent")),
            fmt(z.get("notifies_per_s_target")), fmt(z.get("wakeups_per_s")),
            fmt(z.get("pg_cpu_notify_pct_schedstat", z.get("pg_cpu_notify_pct")))))
    L.append("")
NAMES = [
    ("crash_worst_le_ttl_plus_50ms", "kill -9: worst <= ttl + 50 ms"),
    ("clean_median_below_etcd_lock_term", "SIGTERM: median below etcd's lock handover"),
    ("clean_worst_le_30ms", "SIGTERM: worst <= 30 ms"),
    ("clean_http_median_below_etcd_lock_term", "SIGTERM, to the successor's /master 200: median below etcd's"),
    ("clean_http_worst_le_30ms", "SIGTERM, to the successor's /master 200: worst <= 30 ms"),
    ("stop_new_master_within_ttl_plus_50ms", "SIGSTOP: new master within ttl + 50 ms"),
    ("stop_503_at_once_on_resume", "SIGSTOP: 503 at once on resume, no 200 after"),
    ("no_two_200s", "no sample with two 200s"),
    ("switchover_request_to_term_median_le_10ms", "switchover: request to term, median <= 10 ms"),
    ("statements_per_agent_per_renew_le_1", "<= 1 statement per agent per renew (+- 1 per agent and window)"),
    ("agent_rss_le_10mb", "agent RSS <= 10 MB (max)"),
    ("agent_cpu_le_1pct", "agent CPU <= 1% of a core (max)"),
]
L.append("Against DESIGN.md's \"Figures it must reach\":")
L.append("")
L.append("| figure | " + " | ".join(labels) + " |")
L.append("| --- |" + " :---: |" * len(labels))
for key, name in NAMES:
    row = []
    for label in labels:
        v = targets[label].get(key)
        row.append("n/a" if v is None else ("pass" if v else "**FAIL**"))
    L.append("| %s | %s |" % (name, " | ".join(row)))
L.append("")
L.append("Plots: takeover_distributions.png, takeover_vs_agents.png, cost_vs_agents.png%s. Caveats: the machine is shared; "
         "commits count every transaction of the database, also one in which a listening backend reads a "
         "notification; counters of pg_stat_database and pg_stat_wal lag up to ~1 s per backend; agent CPU in 10 ms "
         "ticks; MB are MiB (VmRSS / 1024)."
         % ("" if plots_ok else " (gnuplot failed)"))
text = "\n".join(L) + "\n"
with open(os.path.join(out, "summary.md"), "w") as f:
    f.write(text)
print(text)
sys.exit(0 if plots_ok else 1)
PY
  echo "bench.sh: the report failed" >&2
  broken=1
fi

elapsed=$(($(date +%s) - started_at))
say "done in $((elapsed / 60)) min $((elapsed % 60)) s: $out"
if [ "$broken" -ne 0 ]; then
  echo "bench.sh: a run broke (see the lines above and the logs in $out)" >&2
  exit 1
fi
exit 0
