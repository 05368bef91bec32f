"""Where a worker's time goes on a backlog, or at a steady offered rate: its own stage metrics, and py-spy
samples of every thread.

Runs one ``moderation worker`` (as ``moderation bench`` does: embedded stack, fresh topics, a warm-up burst, then
a backlog released at once, or with ``--offered R`` the posts sent at R a second while it runs, as the half-load
runs do), reads ``moderation_stage_seconds`` before and after, and, when ``py-spy`` is installed, samples the
worker for the whole window and sums the samples by stage (the innermost frame of the project's own code that
matches a stage rule). With ``--offered`` it also prints the latency percentiles, split into the time before a
post's batch started (delivery, the batch fill, the wait for the prepare step) and the time in its batch (prepare
to verdict, the verdict's ``timings.total_ms``), and the batches the worker made (how many posts each, how long each
stage took per batch): where a post waits at that rate. Usage::

    .venv/bin/python bench/profile_worker.py [--posts 640] [--shape inline|ref] [--offered 0] [--threads 0]
        [--processes 1] [--out DIR] [--model models/default]
        [--sources FOLDER (bench/pack.sh's sources/; default: the installed data)]
        [--emulate-gpu (bench/emulate_gpu: the models as a GPU runs them, seen from the host)]

The device is MODERATION_DEVICE's (``bench/gpu.sh`` runs it on CUDA after the benchmark).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from moderation.bench.posts import STORE, default_sources, folder_sources
from moderation.bench.processes import Workers, pause, resume
from moderation.bench.runner import Bench, Collector, ContenderSpec, Plan, Producer, bench_stack
from moderation.bench.stats import Latency
from moderation.settings import load_settings

# (stage, pattern over "function (file)" frames); the first rule that matches a sample's stack, innermost
# project frame first, names its stage.
RULES = (
    ("text model (forward)", r"encode(_prepared)? \(moderation/encode/text\.py"),
    ("text normalise + tokenise", r"prepare \(moderation/encode/text\.py"),
    ("image decode + preprocess", r"(preprocess_many|_decode_jpegs|_preprocess_on_cpu) \(moderation/encode/image\.py"),
    ("image model (forward)", r"encode \(moderation/encode/image\.py"),
    ("post decode: JSON, schema, base64, stores, sha256", r"decode \(moderation/decode/post\.py"),
    ("known-bad hash lists", r"moderation/hashlists/"),
    ("fusion + explanation", r"predict \(moderation/fuse/model\.py"),
    ("policy", r"moderation/decide/"),
    ("redis (cache, verdict claims)", r"moderation/state/cache\.py"),
    ("verdict messages", r"moderation/publish/"),
    ("after publish (metrics, review marks)", r"after_publish \(moderation/pipeline\.py"),
    ("publish to broker", r"publish \(moderation/ingest/stream\.py"),
    ("poll from broker", r"poll_batch \(moderation/ingest/stream\.py"),
    ("commit", r"commit \(moderation/ingest/stream\.py"),
    ("lag and GPU gauges", r"_observe \(moderation/worker\.py"),
    ("other pipeline", r"moderation/pipeline\.py"),
    ("baseline: poll", r"poll \(kafka/consumer/group\.py"),
    ("baseline: flush", r"flush \(kafka/producer/kafka\.py"),
    ("baseline: commit", r"commit \(kafka/consumer/group\.py"),
    ("baseline: other", r"moderation/bench/baselines\.py"),
    ("other worker", r"moderation/worker\.py"),
)

#: Posts of the warm-up burst, before the profiled backlog.
WARM_POSTS = 128


def stage_sums(text: str, field: str = "sum") -> dict[str, float]:
    """``moderation_stage_seconds_<field>`` by stage from a metrics scrape (``sum``: seconds, ``count``: batches),
    summed over the worker processes when there are several."""
    sums: dict[str, float] = {}
    for labels, value in re.findall(rf"^moderation_stage_seconds_{field}\{{([^}}]*)\}} (\S+)$", text, re.M):
        stage = re.search(r'stage="([^"]+)"', labels)
        if stage:
            sums[stage[1]] = sums.get(stage[1], 0.0) + float(value)
    return sums


def classify(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for stage, pattern in RULES:
            if re.search(pattern, frame):
                return stage
    return "outside project code (event loop, aiokafka, idle)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=640)
    parser.add_argument("--shape", choices=("inline", "ref"), default="inline")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes of the product, supervised as MODERATION_WORKER_PROCESSES runs them (py-spy and the "
        "CPU time by thread follow the first)",
    )
    parser.add_argument("--contender", choices=("product", "plain", "naive"), default="product")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second (0: no py-spy)")
    parser.add_argument("--offered", type=float, default=0.0, help="posts/s sent while it runs (0: one backlog)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=Path("models/default"))
    parser.add_argument("--sources", type=Path, default=None, help="a folder of texts.txt and photos/")
    parser.add_argument(
        "--emulate-gpu",
        action="store_true",
        help="the worker's encoders as a GPU runs them, seen from the host (bench/emulate_gpu), with the GPU "
        "settings: batches of 256, the prepare thread at normal priority; emulated figures, not GPU ones",
    )
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="moderation-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    gpu_like: dict[str, object] = {}
    if args.emulate_gpu:  # the worker inherits the environment (not the MODERATION_ part, which its settings give)
        emulation = str(Path(__file__).resolve().parent / "emulate_gpu")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (emulation, os.environ.get("PYTHONPATH"))))
        os.environ["BENCH_EMULATE_GPU"] = "1"
        gpu_like = {"batch_max_size": 256, "text_batch_size": 256, "image_batch_size": 256}
        gpu_like["prepare_priority"] = "normal"
    base = load_settings(model_dir=args.model.resolve(), log_level="WARNING", torch_threads=args.threads, **gpu_like)
    with bench_stack(base, out, base.topic_partitions) as stacked:
        settings = load_settings(**{**stacked.model_dump(), "stores": {STORE: str(out / "store")}})
        plan = Plan(posts=max(args.posts, WARM_POSTS), half_posts=1, naive_posts=1, runs=1)  # enough base images
        sources = folder_sources(args.sources) if args.sources else default_sources()
        bench = Bench(settings, plan, sources, out, echo=print)
        spec = ContenderSpec("profile", "profile", args.contender, args.shape, processes=args.processes)
        contender_settings = bench.contender_settings(spec)
        workers = bench.processes(spec, contender_settings)
        started = time.monotonic()
        workers.start()
        try:
            workers.wait_ready()
            print(f"worker ready in {time.monotonic() - started:.1f} s (model loading, warm-up, joining the group)")
            worker = workers.worker if isinstance(workers, Workers) else None
            collector, producer = Collector(contender_settings), Producer(contender_settings)
            pids = workers.pids()
            pid = pids[0]
            warm = bench.post_set("profile-w", WARM_POSTS, args.shape)
            producer.send(contender_settings.topic_posts, warm)
            collector.collect("profile-w", len(warm), 300)
            posts = bench.post_set("profile-s", args.posts, args.shape)
            spy = None
            raw = out / "py-spy.txt"
            exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
            if args.rate and Path(exe).exists():  # started before the pause: py-spy cannot attach to a stopped process
                spy = subprocess.Popen(
                    [
                        exe,
                        "record",
                        "-p",
                        str(pid),
                        "-r",
                        str(args.rate),
                        "-f",
                        "raw",
                        "-o",
                        str(raw),
                        "--threads",
                        "--idle",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=(out / "py-spy.log").open("wb"),
                )
                time.sleep(2.0)
            scrape = worker.scrape() if worker else ""
            before, batches_before = stage_sums(scrape), stage_sums(scrape, "count")
            split: dict[str, Latency] = {}  # with --offered, the product's latency before and in its batch
            if args.offered > 0:
                cpu_before, threads_before = cpu_seconds(), cpu_seconds(Path(f"/proc/{pid}/task"))
                sent: list[float] = []
                sender = threading.Thread(
                    target=lambda: sent.extend(producer.send(contender_settings.topic_posts, posts, args.offered))
                )
                sender.start()
                published, _ = collector.collect("profile-s", len(posts), len(posts) / args.offered + 600)
                sender.join()
                created = {key.decode(): at for key, at in zip(posts.keys, sent, strict=True)}
                latency = Latency.of([published[key] - created[key] for key in published])
                timed = [key for key in published if key in collector.processing]  # the product's verdicts
                if timed:
                    in_batch = [collector.processing[key] for key in timed]
                    waited = [published[key] - created[key] - collector.processing[key] for key in timed]
                    split = {"before its batch started": Latency.of(waited), "in its batch": Latency.of(in_batch)}
                released = min(sent)
            else:
                pause(pids)
                producer.send(contender_settings.topic_posts, posts)
                cpu_before, threads_before = cpu_seconds(), cpu_seconds(Path(f"/proc/{pid}/task"))
                resume(pids)
                released = time.time()
                published, _ = collector.collect("profile-s", len(posts), 600)
            elapsed = max(published.values()) - released
            cpu_after, threads_after = cpu_seconds(), cpu_seconds(Path(f"/proc/{pid}/task"))
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            scrape = worker.scrape() if worker else ""
            after, batches_after = stage_sums(scrape), stage_sums(scrape, "count")
        finally:
            workers.stop()
    print(f"\n{len(published)} posts ({args.shape}) in {elapsed:.2f} s = {len(published) / elapsed:.1f} posts/s")
    if args.offered > 0:
        batches = batches_after.get("prepare", 0.0) - batches_before.get("prepare", 0.0)
        print(
            f"offered {args.offered:,.1f} posts/s: latency p50 {latency.p50:.3f} s, p95 {latency.p95:.3f} s, "
            f"p99 {latency.p99:.3f} s; {batches:.0f} batches, {len(published) / max(batches, 1):.1f} posts a batch"
        )
        for part, figures in split.items():
            print(f"  {part}: p50 {figures.p50:.3f} s, p95 {figures.p95:.3f} s, p99 {figures.p99:.3f} s")
    print("\nworker stage metrics (moderation_stage_seconds, over the window; ms a batch where it ran):")
    for stage in sorted(after):
        spent = after[stage] - before.get(stage, 0.0)
        runs = batches_after.get(stage, 0.0) - batches_before.get(stage, 0.0)
        each = f"{1000 * spent / runs:7.1f} ms x {runs:.0f}" if runs else ""
        print(f"  {stage:<16} {spent:7.2f} s  {100 * spent / elapsed:5.1f}% of wall time  {each}")
    print_cpu(cpu_before, cpu_after, pid, elapsed)
    print_cpu(threads_before, threads_after, pid, elapsed, "thread of the worker")
    if raw.exists():
        by_thread: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            thread = stack.split(";", 1)[0]
            by_thread[thread][classify(stack)] += int(count)
        print(f"\npy-spy samples by thread and stage ({raw}):")
        for thread, counts in sorted(by_thread.items(), key=lambda item: -sum(item[1].values())):
            total = sum(counts.values())
            print(f"  {thread}: {total} samples")
            for stage, count in counts.most_common():
                print(f"    {100 * count / total:5.1f}%  {stage}")


CpuTimes = dict[int, tuple[str, float]]  # pid -> (command name, CPU seconds so far)


def cpu_seconds(under: Path = Path("/proc")) -> CpuTimes:
    """CPU seconds (user + system) so far of every process on this machine (or, given ``/proc/PID/task``, of every
    thread of that process), by id, with its command (thread) name; empty where there is no ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK")
    seen: CpuTimes = {}
    for stat in under.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended meanwhile
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        seen[int(stat.parent.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return seen


def print_cpu(before: CpuTimes, after: CpuTimes, worker: int, wall: float, unit: str = "process") -> None:
    """Where the machine's CPU time went over the backlog, by process (the worker against the broker, Redis and
    this script's producer and collector, which share its cores) or by thread of the worker."""
    spent = {pid: (name, used - before.get(pid, (name, 0.0))[1]) for pid, (name, used) in after.items()}
    busy = sorted(((used, pid, name) for pid, (name, used) in spent.items() if used >= 0.05), reverse=True)
    if not busy:
        return
    print(f"\nCPU seconds by {unit} over the backlog ({os.cpu_count()} cores x {wall:.2f} s wall):")
    roles = {worker: "the worker", os.getpid(): "this script"} if unit == "process" else {}
    for used, pid, name in busy:
        print(f"  {used:7.2f} s  {100 * used / wall:5.1f}% of one core  {roles.get(pid, name)} (id {pid})")


if __name__ == "__main__":
    main()
