"""Two machines simulated on one: a probe fit and a gradient all-reduce across two network namespaces.

    sudo python benchmarks/two_nodes.py [--per-class 20] [--backbone minilm] [--steps 5] [--rate 1gbit]

Each "node" is a network namespace of its own (`ip netns`), with its own loopback and one end of a veth pair
(10.200.X.1 and 10.200.X.2): the two can reach each other only over that link, as two machines over a cable, while
they share the file system (as a cluster's nodes share one, for the embedding cache and the run folder). On each,
`torchrun --nnodes 2 --nproc-per-node 1 --rdzv-backend c10d --rdzv-endpoint 10.200.X.1:29500` starts one rank,
with GLOO_SOCKET_IFNAME naming its end of the link.

1. `headstart fit TABLE --strategy probe --precision fp32` on a generated sentiment table, once as one process
   and once across the two nodes: the metrics must be the same (each item embedded once, by one of the nodes).
2. The all-reduce of a gradient as large as minilm's (22,713,216 float32 parameters, 91 MB) between the two
   nodes, per step (the slower rank's time, median of --steps), on the bare veth link and with each end shaped
   to --rate by `tc qdisc ... tbf`; against the ring all-reduce's lower bound 2(N-1)/N * bytes / bandwidth
   (each rank sends, and receives, that much over its link).

Needs root (namespaces, veth, tc); the namespaces are removed afterwards whatever happens. Prints a table and
writes benchmarks/out/two_nodes.json (or --results) with the git commit. tests/test_two_nodes.py runs it small;
`--smoke` runs it smaller still (a random tiny BERT, 100,000 numbers, one step), or says why it cannot.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common
from _common import git_commit, machine, table

REPOSITORY = Path(__file__).resolve().parents[1]
MINILM_PARAMETERS = 22_713_216  # all-MiniLM-L6-v2, every one trained by finetune
RENDEZVOUS_PORT = 29500  # free in a fresh namespace: nothing else listens there
# Far above the seconds these runs take; only so that a hung rendezvous cannot hang the caller.
HANG_GUARD_S = 1800
CANNOT_MAKE_NODES = 77  # the exit status when namespaces cannot be made here (automake's "skipped")


class NamespacesUnavailable(Exception):
    """This machine (or this user) cannot make the network namespaces: the reason, for a skip message."""


@dataclass(frozen=True)
class Link:
    """Two network namespaces joined by a veth pair: node i is namespaces[i], with interfaces[i] at addresses[i]."""

    namespaces: tuple[str, str]
    interfaces: tuple[str, str]
    addresses: tuple[str, str]


def namespaces_unavailable() -> str | None:
    """Why two namespaces cannot be made here (None when they may be: making them is the real test)."""
    if not sys.platform.startswith("linux"):
        return f"network namespaces are Linux's; this is {sys.platform}"
    if os.geteuid() != 0:
        return "making network namespaces and veth links needs root"
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    return None


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise NamespacesUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


@contextmanager
def two_nodes() -> Iterator[Link]:
    """Make the two namespaces and their link for the duration of the block, and remove them afterwards (deleting
    a namespace deletes the veth end inside it, and with it the pair). Raises NamespacesUnavailable where the
    kernel or the user's rights refuse."""
    reason = namespaces_unavailable()
    if reason:
        raise NamespacesUnavailable(reason)
    tag = f"hs{os.getpid()}"  # unique among concurrent runs; interface names must stay under 16 characters
    subnet = f"10.200.{os.getpid() % 250}"
    link = Link((f"{tag}n0", f"{tag}n1"), (f"{tag}v0", f"{tag}v1"), (f"{subnet}.1", f"{subnet}.2"))
    made: list[str] = []
    try:
        for namespace in link.namespaces:
            _ip("netns", "add", namespace)
            made.append(namespace)
        _ip("link", "add", link.interfaces[0], "type", "veth", "peer", "name", link.interfaces[1])
        for namespace, interface, address in zip(link.namespaces, link.interfaces, link.addresses):
            _ip("link", "set", interface, "netns", namespace)
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", interface)
            _ip("-n", namespace, "link", "set", interface, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        yield link
    finally:
        for namespace in made:
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        subprocess.run(["ip", "link", "delete", link.interfaces[0]], capture_output=True)  # if never moved


def shape(link: Link, rate: str) -> None:
    """Limit what each node sends over the link to `rate` (a token bucket on each end: the link is full duplex)."""
    if shutil.which("tc") is None:
        raise NamespacesUnavailable("the `tc` command (iproute2) is not installed")
    for namespace, interface in zip(link.namespaces, link.interfaces):
        done = subprocess.run(["ip", "netns", "exec", namespace, "tc", "qdisc", "replace", "dev", interface, "root",
                               "tbf", "rate", rate, "burst", "1mb", "latency", "50ms"], capture_output=True, text=True)
        if done.returncode != 0:
            raise NamespacesUnavailable(f"tc could not shape {interface}: {done.stderr.strip()}")


def bits_per_second(rate: str) -> float:
    """tc's rate syntax (1gbit, 100mbit, 10kbit, 500bit) in bits per second."""
    match = re.fullmatch(r"([\d.]+)\s*([kmg]?)bit", rate.strip().lower())
    if not match:
        raise SystemExit(f"--rate must be like 1gbit or 100mbit, got {rate!r}")
    return float(match[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match[2]]


def environment(cache: Path) -> dict[str, str]:
    """Every node's environment: this checkout's source first, its own embedding cache, offline, no threads'
    fight over the two cores (one torch thread per rank), no progress bars."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "GLOO_SOCKET_IFNAME")}
    env |= {"HEADSTART_CACHE": str(cache), "HEADSTART_PROGRESS": "0", "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY / "src"), env.get("PYTHONPATH")]))}
    return env


def run_on_both(link: Link, command: list[str], env: dict[str, str]) -> list[subprocess.CompletedProcess]:
    """`torchrun ... COMMAND` on each node, one rank each, the rendezvous on node 0's address; both finished.
    torchrun finds both facts below from the machine's host name, which here (the namespaces share one, resolving to
    127.0.0.1) names neither node's link address, so they are given: node 0 hosts the rendezvous
    (`--rdzv-conf is_host=1`), and each node's address is its end of the link (`--local-addr`; without it the
    ranks are told MASTER_ADDR=localhost and wait for each other for ever)."""
    rendezvous = ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                  f"{link.addresses[0]}:{RENDEZVOUS_PORT}", "--rdzv-id", f"two-nodes-{os.getpid()}-{time.time_ns()}",
                  "--max-restarts", "0"]
    nodes = []
    for node, (namespace, interface, address) in enumerate(zip(link.namespaces, link.interfaces, link.addresses)):
        launch = ["ip", "netns", "exec", namespace, sys.executable, "-m", "torch.distributed.run", *rendezvous,
                  "--node-rank", str(node), "--rdzv-conf", f"is_host={int(node == 0)}", "--local-addr", address,
                  *command]
        nodes.append(subprocess.Popen(launch, env={**env, "GLOO_SOCKET_IFNAME": interface}, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, start_new_session=True))
    finished = []
    try:
        for node in nodes:
            out, err = node.communicate(timeout=HANG_GUARD_S)
            finished.append(subprocess.CompletedProcess(node.args, node.returncode, out, err))
    finally:
        for node in nodes:
            if node.poll() is None:  # a node left waiting for its partner: stop it and its ranks
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
    return finished


def _check(runs: list[subprocess.CompletedProcess], what: str) -> None:
    for node, run in enumerate(runs):
        if run.returncode != 0:
            raise SystemExit(f"{what} failed on node {node} (exit {run.returncode}):\n{run.stderr[-4000:]}")


def write_table(path: Path, per_class: int) -> Path:
    """A sentiment table of 2 * per_class clearly positive and negative sentences (as the tests' generator)."""
    import numpy as np

    rng = np.random.default_rng(0)
    good = ["wonderful", "great", "delightful", "excellent", "lovely", "superb", "brilliant", "moving"]
    bad = ["terrible", "awful", "boring", "dreadful", "dull", "horrible", "tedious", "painful"]
    lines = ["text,label"]
    for i in range(per_class):
        lines += [f"a {rng.choice(good)} and {rng.choice(good)} film number {i},positive",
                  f"a {rng.choice(bad)} and {rng.choice(bad)} film number {i},negative"]
    path.write_text("\n".join(lines) + "\n")
    return path


def compare_fits(link: Link, folder: Path, per_class: int, backbone: str) -> dict:
    """The probe fit as one process and across the two nodes: both metrics, and whether they are the same."""
    data = write_table(folder / "reviews.csv", per_class)
    fit = ["-m", "headstart", "fit", str(data), "--backbone", backbone, "--strategy", "probe", "--precision", "fp32"]
    started = time.perf_counter()
    single = subprocess.run([sys.executable, *fit, "--out", str(folder / "one")], capture_output=True, text=True,
                            env=environment(folder / "cache-one"), timeout=HANG_GUARD_S)
    single_s = time.perf_counter() - started
    _check([single], "the single-process fit")
    started = time.perf_counter()
    # One cache folder for both nodes: the shared file system a cluster's nodes have.
    _check(run_on_both(link, [*fit, "--out", str(folder / "two")], environment(folder / "cache-two")),
           "the two-node fit")
    two_s = time.perf_counter() - started
    metrics = {run: json.loads((folder / run / "metrics.json").read_text()) for run in ("one", "two")}
    for m in metrics.values():
        m.pop("timings", None)
    from safetensors.numpy import load_file

    digests = {run: [bytes(d) for shard in sorted((folder / f"cache-{run}" / "embeddings").rglob("*.safetensors"))
                     for d in load_file(shard)["digests"]] for run in ("one", "two")}
    return {"items": 2 * per_class, "backbone": backbone, "same_metrics": metrics["one"] == metrics["two"],
            "metrics_one_process": metrics["one"], "metrics_two_nodes": metrics["two"],
            "embedded": {run: len(d) for run, d in digests.items()},
            "embedded_distinct": {run: len(set(d)) for run, d in digests.items()},
            "same_items_embedded": set(digests["one"]) == set(digests["two"]),
            "wall_s_one_process": single_s, "wall_s_two_nodes": two_s}


def time_all_reduce(link: Link, folder: Path, parameters: int, steps: int, rate: str | None) -> dict:
    """All-reduce `parameters` float32 numbers between the nodes `steps` times (after one warm-up): each step's
    time on the slower rank, with the link bare or shaped to `rate`."""
    if rate:
        shape(link, rate)
    results = folder / f"all-reduce-{rate or 'bare'}.json"
    _check(run_on_both(link, [str(Path(__file__).resolve()), "--all-reduce-worker", "--parameters", str(parameters),
                              "--steps", str(steps), "--results", str(results)], environment(folder / "cache-two")),
           "the all-reduce")
    return json.loads(results.read_text())


def all_reduce_worker(parameters: int, steps: int, results: Path) -> None:
    """Run by torchrun on each node: time `steps` all-reduces of a gradient-sized tensor; rank 0 writes them."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    ranks, rank = dist.get_world_size(), dist.get_rank()
    gradient = torch.empty(parameters, dtype=torch.float32)
    times = []
    for _ in range(steps + 1):  # the first warms up: gloo sets up its pairs' buffers on first use
        gradient.fill_(rank + 1)
        dist.barrier()
        started = time.perf_counter()
        dist.all_reduce(gradient)
        times.append(time.perf_counter() - started)
        expected = ranks * (ranks + 1) / 2
        if gradient[0].item() != expected or gradient[-1].item() != expected:
            raise SystemExit(f"the all-reduce summed to {gradient[0].item()}, expected {expected}")
    every_rank = [None] * ranks
    dist.all_gather_object(every_rank, times[1:])
    if rank == 0:
        slowest = [max(step) for step in zip(*every_rank)]
        results.write_text(json.dumps({"ranks": ranks, "parameters": parameters, "bytes": parameters * 4,
                                       "step_s": slowest, "median_s": statistics.median(slowest)}) + "\n")
    dist.destroy_process_group()


def measure(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """The fit's comparison and the bare and shaped all-reduce timings, in one pair of namespaces."""
    with tempfile.TemporaryDirectory(prefix="headstart-two-nodes-") as scratch, two_nodes() as link:
        folder = Path(scratch)
        print(f"nodes: {link.namespaces[0]} at {link.addresses[0]}, {link.namespaces[1]} at {link.addresses[1]}",
              flush=True)
        fit = compare_fits(link, folder, args.per_class, args.backbone)
        print(f"probe fit on {fit['items']} items, {fit['backbone']}: accuracy "
              f"{fit['metrics_one_process']['accuracy']:.4f} as one process, "
              f"{fit['metrics_two_nodes']['accuracy']:.4f} on two nodes; same metrics: {fit['same_metrics']}",
              flush=True)
        bare = time_all_reduce(link, folder, args.parameters, args.steps, None)
        shaped = time_all_reduce(link, folder, args.parameters, args.steps, args.rate)
    return fit, bare, shaped


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


COLUMNS = ["link", "median s per all-reduce", "ring theory s", "measured / theory", "effective Gbit/s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=20, help="sentences of each of the 2 classes to fit on")
    parser.add_argument("--backbone", default="minilm")
    parser.add_argument("--parameters", type=int, default=MINILM_PARAMETERS,
                        help="float32 numbers all-reduced per step (default: minilm's parameter count)")
    parser.add_argument("--steps", type=int, default=5, help="timed all-reduces per link setting")
    parser.add_argument("--rate", default="1gbit", help="the shaped link's rate, in tc's syntax")
    parser.add_argument("--results", type=Path, help="the JSON to write (default benchmarks/out/two_nodes.json)")
    parser.add_argument("--all-reduce-worker", action="store_true", help=argparse.SUPPRESS)
    _common.add_smoke_option(parser)
    args = parser.parse_args()
    if args.all_reduce_worker:
        return all_reduce_worker(args.parameters, args.steps, args.results)
    if args.smoke:
        folder = _common.start_smoke()
        if namespaces_unavailable():
            _common.skip_smoke(namespaces_unavailable())
        _, bert = _common.smoke_text(folder / "text", per_class=2)
        args.backbone, args.per_class, args.parameters, args.steps = str(bert), 10, 100_000, 1

    results_path = args.results or _common.OUT / "two_nodes.json"
    signal.signal(signal.SIGTERM, _stop)  # a `kill` still removes the namespaces (the `finally` below)
    try:
        fit, bare, shaped = measure(args)
    except NamespacesUnavailable as e:
        print(f"cannot simulate two nodes here: {e}", file=sys.stderr)
        raise SystemExit(CANNOT_MAKE_NODES) from None

    nbytes, ranks, bandwidth = args.parameters * 4, bare["ranks"], bits_per_second(args.rate)
    theory_s = 2 * (ranks - 1) / ranks * nbytes * 8 / bandwidth
    sent_bits = 2 * (ranks - 1) / ranks * nbytes * 8
    rows = [{"link": "veth, bare", "median s per all-reduce": bare["median_s"], "ring theory s": "",
             "measured / theory": "", "effective Gbit/s": sent_bits / bare["median_s"] / 1e9},
            {"link": f"veth, tbf {args.rate}", "median s per all-reduce": shaped["median_s"], "ring theory s": theory_s,
             "measured / theory": shaped["median_s"] / theory_s,
             "effective Gbit/s": sent_bits / shaped["median_s"] / 1e9}]
    text = table(rows, COLUMNS)
    print(f"\nall-reduce of {args.parameters:,} float32 ({nbytes / 1e6:.1f} MB) between 2 nodes, "
          f"{args.steps} steps each, the slower rank's time:\n{text}")
    result = {"machine": machine(), "commit": git_commit(), "args": {k: str(v) for k, v in vars(args).items()},
              "fit": fit, "all_reduce": {"bare": bare, "shaped": shaped, "rate_bits_per_s": bandwidth,
                                         "ring_theory_s": theory_s}, "table": text}
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwrote {results_path}")
    if not fit["same_metrics"]:
        raise SystemExit("the two-node fit's metrics differ from the single process's")


if __name__ == "__main__":
    main()
