"""Score benchmark, run by scripts/bench.sh against private servers whose settings are in the
environment: trains a small logistic run, ingests the 10-date region, scores it with 1 and
with 2 replicas (one inference thread each) in three adjacent pairs, then a long job of the region repeated to
LONG tiles on 2 replicas, sampling each replica's tiles counter and RSS. Prints a markdown
section on stdout; progress goes to stderr.

usage: score_bench.py ROOT DATA_DIR STATE_DIR LONG_TILES
"""
import json
import math
import os
import shutil
import subprocess
import sys
import time
import urllib.request

root, data, state, long_tiles = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
REPEATS = 3
REGION_TILES = 3200
bin_dir = os.path.join(root, "target", "debug")
procs = []


def log(*a):
    print("[bench score]", *a, file=sys.stderr, flush=True)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def spawn(name, **env):
    port = free_port()
    e = dict(os.environ, AERIAL__TELEMETRY__HTTP_ADDR=f"127.0.0.1:{port}",
             AERIAL__TELEMETRY__LOG_FORMAT="json", **env)
    logf = open(os.path.join(state, f"{name}-{port}.log"), "w")
    p = subprocess.Popen([os.path.join(bin_dir, name)], env=e, stdout=logf, stderr=logf)
    p.port = port
    procs.append(p)
    return p


def stop(p):
    p.terminate()
    p.wait(timeout=60)
    procs.remove(p)


def cli(*args):
    return subprocess.run([os.path.join(bin_dir, "aerial"), *args], check=True,
                          capture_output=True, text=True).stdout


def metric(p, name):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{p.port}/metrics", timeout=5).read().decode()
    except OSError:
        return 0.0
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name))


def rss_mib(p, field="VmRSS"):
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    return 0


def wait_ready(p):
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{p.port}/readyz", timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{p.args[0]} never became ready")


def cpu_s(pid):
    """CPU seconds (user + system) a process has used so far."""
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


server_pids = {name: int(open(os.path.join(state, path)).read().strip())
               for name, path in (("RabbitMQ", "rabbitmq/rabbitmq.pid"),
                                  ("SeaweedFS", "seaweedfs/weed.pid"))}


def score(job, dataset):
    cli("score", "--run", "bench-lr", "--dataset", dataset, "--name", job)
    return json.loads(cli("results", job, "--json"))


try:
    score_env = dict(AERIAL__WORKER__THREADS="1", AERIAL__WORKER__BATCH_SIZE="32")
    helpers = [spawn("aerial-ingest"), spawn("aerial-featurize", AERIAL__WORKER__THREADS="2"),
               spawn("aerial-train")]
    for p in helpers:
        wait_ready(p)
    # a small logistic run: 20 training + 5 validation tiles of each class
    lab = os.path.join(state, "lab")
    for split, n in (("train", 20), ("val", 5)):
        for cls in sorted(os.listdir(os.path.join(data, "rsscn7", split))):
            src = os.path.join(data, "rsscn7", split, cls)
            dst = os.path.join(lab, split, cls)
            os.makedirs(dst)
            for f in sorted(os.listdir(src))[:n]:
                shutil.copy(os.path.join(src, f), dst)
    log("ingest + featurize + train a small run")
    cli("ingest", "labelled", lab, "--dataset", "benchlab")
    cli("train", "--name", "bench-lr", "--dataset", "benchlab", "--method", "logistic")
    scenes = sorted(os.path.join(data, "region", "naip_nd_m_4709963_se", f)
                    for f in os.listdir(os.path.join(data, "region", "naip_nd_m_4709963_se"))
                    if f.endswith(".tif"))
    cli("ingest", "scene", *scenes, "--dataset", "region", "--tile-meters", "224")
    for p in list(helpers):
        stop(p)

    # a 64-tile job loads the model into fresh replicas before each measured one
    subprocess.run([os.path.join(bin_dir, "repeat_dataset"), "region", "warm", "1", "64"],
                   check=True, capture_output=True)
    runs = {}  # replicas -> [(seconds, tiles/s, {process: CPU s per 1,000 tiles}, offered)]
    # One run of this shared VM varies by ±10 % and its speed drifts over minutes, so the
    # two replica counts are measured in adjacent pairs (order alternating) and the
    # speed-up is the median of the pairs' ratios.
    for r in range(REPEATS):
        for n in ((1, 2) if r % 2 == 0 else (2, 1)):
            reps = [spawn("aerial-score", **score_env) for _ in range(n)]
            for p in reps:
                wait_ready(p)
            score(f"warm-r{n}-{r + 1}", "warm")
            pids = {**{f"replica {i + 1}": p.pid for i, p in enumerate(reps)}, **server_pids}
            log(f"region with {n} replica(s), round {r + 1}")
            before = {k: cpu_s(v) for k, v in pids.items()}
            t0 = time.time()
            s = score(f"region-r{n}-{r + 1}", "region")
            wall = time.time() - t0
            assert s["predicted"] == s["total"] == REGION_TILES, s
            k = 1000 / s["total"]
            used = {name: (cpu_s(pid) - before[name]) * k for name, pid in pids.items()}
            runs.setdefault(n, []).append(
                (s["duration_s"], s["total"] / s["duration_s"], used, wall * k * os.cpu_count()))
            log(f"{n} replica(s): {runs[n][-1][1]:.1f} tiles/s; CPU s per 1,000 tiles",
                {k: round(v, 2) for k, v in used.items()}, f"of {runs[n][-1][3]:.1f}")
            for p in reps:
                stop(p)
    ratios = [b[1] / a[1] for a, b in zip(runs[1], runs[2])]
    speedup = sorted(ratios)[len(ratios) // 2]
    # the median run of each (by rate)
    med = {n: sorted(rs, key=lambda x: x[1])[len(rs) // 2] for n, rs in runs.items()}

    times = math.ceil(long_tiles / 3200)
    subprocess.run([os.path.join(bin_dir, "repeat_dataset"), "region", "county", str(times)],
                   check=True, capture_output=True)
    total = 3200 * times
    log(f"long run: {total} tiles on 2 replicas")
    reps = [spawn("aerial-score", **score_env) for _ in range(2)]
    for p in reps:
        wait_ready(p)
    cli("score", "--run", "bench-lr", "--dataset", "county", "--name", "county", "--no-wait")
    samples = []  # (t, [tiles per replica], [rss per replica])
    while True:
        try:
            st = json.loads(cli("status", "county", "--json"))
        except subprocess.CalledProcessError:  # not fanned out yet
            time.sleep(1)
            continue
        samples.append((time.time(), [metric(p, "aerial_tiles_processed_total") for p in reps],
                        [rss_mib(p) for p in reps],
                        [cpu_s(p.pid) for p in reps] + [cpu_s(v) for v in server_pids.values()]))
        if st["state"] != "running":
            break
        time.sleep(5)
    peak = [rss_mib(p, "VmHWM") for p in reps]
    s = json.loads(cli("results", "county", "--json"))
    assert s["predicted"] == s["total"] == total, s

    def window(lo, hi):
        done = [sum(x[1]) for x in samples]
        sel = [x for x, d in zip(samples, done) if lo * total <= d <= hi * total]
        a, b = sel[0], sel[-1]
        k = 1000 / (sum(b[1]) - sum(a[1]))
        cpu_per_1000 = [(y - x) * k for x, y in zip(a[3], b[3])]
        offered = (b[0] - a[0]) * k * os.cpu_count()
        return ([(b[1][i] - a[1][i]) / (b[0] - a[0]) for i in range(2)], a[2], b[2],
                cpu_per_1000 + [offered])

    start_rate, start_rss, _, start_cpu = window(0.05, 0.20)
    end_rate, _, end_rss, end_cpu = window(0.80, 0.97)
    for p in reps:
        stop(p)

    r1, r2 = med[1][1], med[2][1]
    names = list(med[2][2])

    def cpu_row(n):
        return " | ".join(f"{med[n][2][k]:.1f}" if k in med[n][2] else "–" for k in names)

    print(f"""## Score

Region: 10 dates × 320 tiles = 3,200 tiles (45 px scene tiles, upsampled to 224²), a
logistic run on MobileNetV2 features, batch 32, **one inference thread per replica**
(`AERIAL__WORKER__THREADS=1`), measured from job acceptance to assembled outputs (fan-out,
scoring, GeoTIFF/PNG/GeoJSON/CSV assembly). {REPEATS} rounds, each scoring the region once
with 1 and once with 2 fresh replicas (order alternating), each preceded by a 64-tile job
that loads the model; the speed-up is the median of the rounds' ratios, because this
shared VM's speed drifts by ±10 % over minutes (the same work has taken 4.6–5.6 CPU-s per
1,000 tiles per replica) and the two runs of a round are the closest in time.

| replicas | tiles | seconds per round | tiles/s (median) |
|---:|---:|---|---:|
| 1 | {REGION_TILES} | {", ".join(f"{x[0]:.1f}" for x in runs[1])} | {r1:.1f} |
| 2 | {REGION_TILES} | {", ".join(f"{x[0]:.1f}" for x in runs[2])} | {r2:.1f} |

**Speed-up 2 vs 1 replica: {speedup:.2f}×** (target ≥ 1.6), the median of the rounds'
ratios {", ".join(f"{x:.2f}" for x in ratios)} (per-round rates: 1 replica
{", ".join(f"{x[1]:.1f}" for x in runs[1])}, 2 replicas {", ".join(f"{x[1]:.1f}" for x in runs[2])}; ratio of the
median rates {r2 / r1:.2f}×).

CPU seconds (user + system) per 1,000 tiles during the median run of each, from the CLI's
publish to its results (the machine offers the last column in that time):

| replicas | {" | ".join(names)} | offered |
|---:|{"---:|" * (len(names) + 1)}
| 1 | {cpu_row(1)} | {med[1][3]:.1f} |
| 2 | {cpu_row(2)} | {med[2][3]:.1f} |

Long run: the region repeated {times}× = {total:,} tiles (the reference county's size),
2 replicas, {s['duration_s']:.0f} s end to end ({total / s['duration_s']:.1f} tiles/s), every tile
predicted once ({s['predicted']:,} rows).

| replica | tiles/s, 5–20 % of the job | tiles/s, 80–97 % | change | RSS MiB at 5 % | RSS MiB at 97 % | peak RSS MiB |
|---|---:|---:|---:|---:|---:|---:|""")
    for i in range(2):
        print(f"| {i + 1} | {start_rate[i]:.1f} | {end_rate[i]:.1f} | "
              f"{100 * (end_rate[i] / start_rate[i] - 1):+.0f} % | {start_rss[i]} | {end_rss[i]} | {peak[i]} |")
    print(f"""
CPU seconds per 1,000 tiles in the same two windows (a rate that falls while these stay flat
points at the machine, not at our processes):

| window | replica 1 | replica 2 | {" | ".join(server_pids)} | offered |
|---|---:|---:|---:|---:|---:|""")
    for name, c in (("5–20 %", start_cpu), ("80–97 %", end_cpu)):
        print(f"| {name} | {' | '.join(f'{v:.1f}' for v in c)} |")
    print()
finally:
    for p in procs:
        p.kill()
