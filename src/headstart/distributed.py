"""The run's processes: rank, world size and barrier, from torch.distributed when launched by torchrun, one process
otherwise.

Distribution is a property of the run, not of each command: extraction shards its items by rank (`shard`) and
shares the results (the embedding cache, `all_gather_object`), and what writes the run's files is wrapped in
`on_main`, so that only rank 0 writes while the others wait for it. Commands do not test the rank themselves.

With one process (no torchrun, or `--nproc-per-node 1`) every function here is a constant or a no-op: nothing
is initialised and nothing costs anything.
"""

from __future__ import annotations

import atexit
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .errors import HeadstartError

T = TypeVar("T")
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# PyTorch's modules with functions whose default argument is the default process group (`group=group.WORLD`, taken
# when the module is imported): see `_import_before_joining`.
HOLD_THE_GROUP_ON_IMPORT = ("torch.distributed.nn.functional", "torch.distributed.fsdp.sharded_grad_scaler",
                            "torch.distributed.optim.zero_redundancy_optimizer")


class FailedOnMain(HeadstartError):
    """What the other ranks raise when rank 0 failed in an `on_main` step (rank 0 reports the error itself)."""


def launched() -> bool:
    """Whether torchrun (or another launcher with its environment) started this process as one of several."""
    return all(v in os.environ for v in LAUNCH_VARIABLES) and int(os.environ["WORLD_SIZE"]) > 1


def _ready() -> bool:
    """Whether this run has several processes; the first call joins the process group (NCCL when each process
    has a GPU of its own, gloo otherwise) unless the caller (Lightning, a user's script) has already done so."""
    if not launched():
        return False
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise HeadstartError("launched by torchrun (RANK and WORLD_SIZE are set) but this PyTorch build has no "
                             "torch.distributed: run a single process, or install a PyTorch with distributed support")
    if not dist.is_initialized():
        own_gpu = gpu_per_process()
        if own_gpu:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))  # "cuda" (default_device) is this rank's GPU
        _join_group("nccl" if own_gpu else "gloo")
        atexit.register(_leave)
    return True


def _join_group(backend: str) -> None:
    """init_process_group from torchrun's environment; after a restart (`--max-restarts`), on a store of its own.

    Hand-written around a PyTorch bug (pytorch/pytorch#135712, #167288): the processes of a restarted run share
    torchrun's store with the run's failed attempt, whose keys are still there, so the new processes can read the
    dead ones' addresses and never connect (gloo: "connectFullMesh failed ... Connection refused"). Each attempt
    keeps its keys under a prefix of its own, as PyTorch once did itself; the first attempt is left as it is."""
    import torch.distributed as dist

    _import_before_joining()
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        dist.init_process_group(backend)
        return
    agent_store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                                int(os.environ["WORLD_SIZE"]), is_master=False)
    dist.init_process_group(backend, store=dist.PrefixStore(f"headstart/attempt_{attempt}", agent_store),
                            rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))


def _import_before_joining() -> None:
    """Import the modules of `HOLD_THE_GROUP_ON_IMPORT` while no group exists, so that their default arguments
    hold None (the default group, looked up when called) rather than this run's group.

    Hand-written around a PyTorch trap: imported after the group is joined (transformers imports FSDP with its
    models), those defaults keep the group alive past `destroy_process_group`, and with it its threads (gloo's
    workers and transport loop), which then still run while the interpreter shuts down. Now and then one of them
    aborts the process there, "terminate called without an active exception" (SIGABRT) on a rank that had done
    all its work, and torchrun fails the run (pytorch/pytorch#179291 and #190489 describe the same abort of gloo's
    threads outliving the interpreter). A module this PyTorch lacks holds nothing."""
    import importlib

    for module in HOLD_THE_GROUP_ON_IMPORT:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError:
            continue


def gpu_per_process() -> bool:
    """Whether each process on this machine has a GPU of its own (NCCL's condition). More processes than GPUs
    share them and talk over gloo (machines of one run are assumed alike: each decides for itself)."""
    import torch

    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    return torch.cuda.is_available() and torch.cuda.device_count() >= per_machine


def _leave() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def run_as_processes(processes: int, arguments: Sequence[str]) -> int:
    """`python -m headstart ARGUMENTS` as `processes` processes on this machine, launched by torchrun with a
    standalone rendezvous (a free local port); returns its exit code. What `--processes N` stands for; gloo talks
    over the loopback interface unless GLOO_SOCKET_IFNAME says otherwise (one machine: whatever the host name
    resolves to, loopback reaches every process)."""
    import subprocess
    import sys

    environment = dict(os.environ)
    if os.path.exists("/sys/class/net/lo"):
        environment.setdefault("GLOO_SOCKET_IFNAME", "lo")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
               "-m", "headstart", *arguments]
    return subprocess.run(command, env=environment, check=False).returncode


def restarted() -> bool:
    """Whether torchrun has restarted this run after one of its processes failed (`--max-restarts`): training
    then continues from the run's last checkpoint, as `--resume` would."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def own_seed(seed: int) -> int:
    """`seed` on rank 0 (so one process draws as it always has), a seed of its own on every other rank: for the
    random numbers each rank draws for its own items (pretraining's masks and noise), which would otherwise follow
    the same pattern on every rank."""
    return seed + 1_000_033 * rank()


def world_size() -> int:
    """How many processes run this command (1 without torchrun)."""
    if not _ready():
        return 1
    import torch.distributed as dist

    return dist.get_world_size()


def rank() -> int:
    """This process's place among them, 0 to world_size() - 1 (0 without torchrun)."""
    if not _ready():
        return 0
    import torch.distributed as dist

    return dist.get_rank()


def is_main() -> bool:
    """Whether this process writes the run's files and prints its results (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process has come here (nothing to wait for with one process)."""
    if _ready():
        import torch.distributed as dist

        dist.barrier()


def shard_bounds(n: int, ranks: int | None = None, of: int | None = None) -> tuple[int, int]:
    """[start, stop) of `rank`'s contiguous share of n items: sizes differ by at most one, the first n % ranks
    ranks take one more, and no item is repeated to even them out (unlike DistributedSampler's padding, which would
    embed and count an item twice)."""
    ranks = world_size() if ranks is None else ranks
    of = rank() if of is None else of
    base, extra = divmod(n, ranks)
    start = of * base + min(of, extra)
    return start, start + base + (of < extra)


def shard(items: Sequence[T], strided: bool = False, *, ranks: int | None = None, of: int | None = None
          ) -> Sequence[T]:
    """This rank's share of `items` (a list, an index array): a contiguous block, or with `strided` every
    world_size()-th item from rank(). Over all ranks each item is in exactly one share. `ranks` and `of` override
    the world size and rank (for tests and planning)."""
    ranks = world_size() if ranks is None else ranks
    of = rank() if of is None else of
    if ranks == 1:
        return items
    if strided:
        return items[of::ranks]
    start, stop = shard_bounds(len(items), ranks, of)
    return items[start:stop]


def global_batches(n: int, per_rank: int, ranks: int | None = None, whole_only: bool = False) -> list[tuple[int, int]]:
    """[start, stop) of each global batch over an epoch's order of n items: per_rank x ranks items each, the last
    one smaller, so that the ranks together take the batches one process with that batch size would; each rank
    then takes its `shard` of every one. A last batch with fewer items than ranks is left out (some rank would
    have none and the others would wait for it in the gradient all-reduce); with `whole_only`, any last batch
    smaller than the others is (a DataLoader's drop_last)."""
    ranks = world_size() if ranks is None else ranks
    size = per_rank * ranks
    least = size if whole_only else ranks
    return [(start, min(start + size, n)) for start in range(0, n, size) if min(size, n - start) >= least]


def all_reducing(module: Any) -> Any:
    """`module` wrapped in torch's DistributedDataParallel on several processes (its gradients are averaged over
    the ranks in the backward pass; the wrapper's forward is the module's), `module` itself with one. The module
    must already be on this rank's device. Parameters the loss never reaches (a text model's pooler) are allowed:
    DDP then leaves their gradients unset, as one process would."""
    if not _ready():
        return module
    import torch
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    return DistributedDataParallel(module, device_ids=[torch.cuda.current_device()] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def sum_over_ranks(values: Sequence[float]) -> list[float]:
    """`values` added up element by element over the ranks (`values` with one process). A collective."""
    if not _ready():
        return list(values)
    import torch
    import torch.distributed as dist

    on = "cuda" if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(list(values), dtype=torch.float64, device=on)
    dist.all_reduce(total)
    return total.cpu().tolist()


def all_gather_object(obj: T) -> list[T]:
    """Every rank's `obj`, in rank order (`[obj]` with one process). A collective: every rank must call it.
    Objects travel pickled between this run's own processes, so keep them to numbers, arrays and strings."""
    if not _ready():
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: T) -> T:
    """Rank 0's `obj` on every rank (a collective, like `all_gather_object`)."""
    if not _ready():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(step: Callable[..., T]) -> Callable[..., T]:
    """Decorate a step that writes the run's files (or computes what every rank would compute alike): on several
    processes it runs on rank 0 only, and every rank returns when it has finished, with its result (the others
    get it when it is small and plain, see `_shareable`; None otherwise). Every rank must call it (it ends in a
    collective). When it fails on rank 0 the other ranks raise `FailedOnMain`, so that the whole run stops
    rather than waiting."""

    @functools.wraps(step)
    def run_on_main(*args: Any, **kwargs: Any) -> T:
        if world_size() == 1:
            return step(*args, **kwargs)
        result, error, failure = None, None, None
        if is_main():
            try:
                result = step(*args, **kwargs)
            except BaseException as e:  # told to the others, then raised here as it was
                error, failure = e, f"{type(e).__name__}: {e}" if not isinstance(e, HeadstartError) else str(e)
        outcome = broadcast_object((failure, result if error is None and _shareable(result) else None))
        if error is not None:
            raise error
        if outcome[0] is not None:
            raise FailedOnMain(f"rank 0 failed: {outcome[0]}")
        return result if is_main() else outcome[1]

    return run_on_main


def _shareable(value: Any) -> bool:
    """Small plain results (paths, numbers, strings, None, and tuples of them) go to the other ranks; anything
    else stays on rank 0."""
    from pathlib import PurePath

    if isinstance(value, tuple):
        return all(_shareable(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool, PurePath))
