"""Extraction engines side by side: PyTorch, ONNX Runtime and OpenVINO computing fit's embedding pass, and where
the time of one image goes (decode, resize, normalise, hand-off, network).

    python benchmarks/extraction_engines.py [--images 5000] [--texts 2000] [--engines torch,onnx,openvino]

For each backbone (efficientnet_lite0 on CIFAR-10 training images, minilm on SST-2 sentences) and engine:
`headstart.embeddings.compute_embeddings` under `using_engine`, as fit runs it (decode in a worker, the default
precision `auto`), after a warm-up call that exports the graph once into the cache (as a first use does); the
timed call includes loading, compiling and the parity check. Reported: items/s and the ratio to PyTorch, the
embeddings' mean relative difference from PyTorch's, and a logistic-regression probe's accuracy on each engine's
embeddings (half the items to fit, half to test). The profile times each stage of the image path on its own, one
thread, in this process. The CPU kind (AMX, AVX512-BF16 without AMX, neither) is detected and recorded, with the
load average before and after: on a shared machine the ratios, measured in one run, mean more than the rates.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    OUT,
    add_smoke_option,
    machine,
    matmul_rate,
    smoke_images,
    smoke_text,
    start_smoke,
    table,
    write_results,
)
from embedding_throughput import flops_per_item, image_items, probe_accuracy, text_items

from headstart._util import cpu_bf16_kind
from headstart.backbones import resolve_backbone
from headstart.embeddings import compute_embeddings
from headstart.extraction_engines import ENGINES, EngineChoice, build_engine, decoded_batch, graph_feeds, using_engine

CPU = torch.device("cpu")


def cpu_kind() -> str:
    """What this CPU multiplies bfloat16 matrices with, detected (never assumed)."""
    return {"amx": "Intel AMX", "avx512_bf16": "AVX512-BF16, no AMX (e.g. AMD Zen 4)"}.get(cpu_bf16_kind() or "",
                                                                                          "no native bf16")


def run_engine(backbone, items, engine: str) -> tuple[float, np.ndarray, dict]:
    """(seconds, embeddings, the engine's record) of one embedding pass as fit runs it."""
    choice = EngineChoice(engine, engine, "given")
    with using_engine(choice):
        started = time.perf_counter()
        embeddings, _ = compute_embeddings(backbone, items, device=CPU, desc=f"{engine}")
        seconds = time.perf_counter() - started
    return seconds, embeddings, choice.skipped


def compare_engines(name: str, backbone, items, labels, engines: list[str]) -> list[dict]:
    rows, reference = [], None
    half = len(items) // 2
    order = np.random.default_rng(0).permutation(len(items))
    train, test = order[:half], order[half:]
    for engine in engines:
        run_engine(backbone, items[:16], engine)  # first use: exports the graph into the cache
        seconds, embeddings, skipped = run_engine(backbone, items, engine)
        if skipped:
            print(f"{name} {engine}: skipped ({skipped[engine]})", flush=True)
            rows.append({"backbone": name, "engine": engine, "skipped": skipped[engine]})
            continue
        if reference is None:
            reference = embeddings  # the first engine, torch by default
        rel = np.linalg.norm(embeddings - reference, axis=1) / np.linalg.norm(reference, axis=1)
        rows.append({"backbone": name, "engine": engine, "items": len(items), "seconds": seconds,
                     "items_per_s": len(items) / seconds, "rel_diff_vs_first": float(rel.mean()),
                     "probe_acc": probe_accuracy(embeddings[train], labels[train], embeddings[test], labels[test])})
        print(f"{name} {engine}: {rows[-1]['items_per_s']:.1f} items/s, probe {rows[-1]['probe_acc']:.3f}", flush=True)
    first = next((r for r in rows if "items_per_s" in r), None)
    for r in rows:
        if first and "items_per_s" in r:
            r["ratio_to_first"] = r["items_per_s"] / first["items_per_s"]
    return rows


def per_image_ms(fn, inputs, repeats: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        for x in inputs:
            fn(x)
    return 1000 * (time.perf_counter() - started) / (repeats * len(inputs))


def profile_images(backbone, items, engines: list[str], batch: int = 64) -> list[dict]:
    """Milliseconds per image of each stage of the image path, timed alone (decode and transform on one thread, as
    the decode worker runs them; the network on this process's threads, on one decoded batch)."""
    from torchvision.transforms import v2 as T

    from headstart.modalities.image import _stack_channels_last, open_image

    items = items[:batch]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    draft = backbone.draft_size()
    pil = [open_image(p, draft) for p in items]
    mode = T.InterpolationMode(backbone.interpolation)
    as_tensor, resize = T.PILToTensor(), T.Resize((backbone.image_size,) * 2, interpolation=mode, antialias=True)
    to_float, normalise = T.ToDtype(torch.float32, scale=True), T.Normalize(backbone.mean, backbone.std)
    uint8 = [resize(as_tensor(im)) for im in pil]
    floats = [to_float(x) for x in uint8]
    normalised = [normalise(x) for x in floats]
    rows = [
        {"stage": "decode the file (PIL, JPEG draft)", "where": "decode worker",
         "ms_per_image": per_image_ms(lambda p: open_image(p, draft), items)},
        {"stage": "to tensor + resize to 224 (uint8, antialias)", "where": "decode worker",
         "ms_per_image": per_image_ms(lambda im: resize(as_tensor(im)), pil)},
        {"stage": "to float32 /255", "where": "decode worker", "ms_per_image": per_image_ms(to_float, uint8)},
        {"stage": "normalise (x - mean) / std", "where": "decode worker", "ms_per_image": per_image_ms(normalise, floats)},
        {"stage": "stack the batch channels_last", "where": "decode worker",
         "ms_per_image": per_image_ms(lambda b: _stack_channels_last(b), [[(x, -1, i, "") for i, x in
                                                                           enumerate(normalised)]]) / len(items)},
        {"stage": "before: stack, then channels_last copy in the main process", "where": "worker + main (before)",
         "ms_per_image": per_image_ms(lambda b: torch.stack(b).contiguous(memory_format=torch.channels_last),
                                      [normalised]) / len(items)},
    ]
    torch.set_num_threads(threads)
    x = torch.stack(normalised).contiguous(memory_format=torch.channels_last)
    rows.append({"stage": "graph input: channels-last pixels as numpy (now)", "where": "main",
                 "ms_per_image": per_image_ms(lambda b: graph_feeds(backbone, b), [x]) / len(items)})
    rows.append({"stage": "graph input: NCHW copy (before: onnx_inputs)", "where": "main (before)",
                 "ms_per_image": per_image_ms(lambda b: b.float().contiguous().numpy(), [x]) / len(items)})
    for engine in engines:
        try:
            if engine == "torch":
                net = backbone.inference_copy(CPU, fold=True)

                def run(b, net=net):
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                                enabled=cpu_bf16_kind() is not None):
                        return net(b)
            else:
                run = build_engine(backbone, engine, "auto", decoded_batch(backbone, items[:8]))
            run(x)
            rows.append({"stage": f"network: {engine}", "where": "main",
                         "ms_per_image": min(per_image_ms(run, [x]) for _ in range(2)) / len(items)})
        except Exception as e:
            rows.append({"stage": f"network: {engine}", "where": f"skipped ({type(e).__name__}: {str(e)[:80]})",
                         "ms_per_image": float("nan")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--backbones", default="efficientnet_lite0,minilm")
    add_smoke_option(parser)
    args = parser.parse_args()
    engines = args.engines.split(",")
    image_root = text_table = None
    backbones = {name: name for name in args.backbones.split(",")}
    if args.smoke:  # 12 generated images and sentences, a small random CNN and a tiny random BERT
        folder = start_smoke()
        image_root = smoke_images(folder / "images")
        text_table, bert = smoke_text(folder / "text", per_class=6)
        args.images, args.texts = 12, 12
        backbones = {"smallcnn": "smallcnn", "tiny-bert": str(bert)}
    load_before = os.getloadavg()
    rate_bf16 = matmul_rate(torch.bfloat16, 256 if args.smoke else 2048)
    rows, profile = [], []
    for name, spec in backbones.items():
        backbone = resolve_backbone(spec, pretrained=spec != "smallcnn")
        if backbone.modality == "image":
            items, labels = image_items(args.images, image_root)
            profile = profile_images(backbone, items, engines)
        else:
            items, labels = text_items(args.texts, text_table)
        flops = flops_per_item(backbone, items)
        for row in compare_engines(name, backbone, items, labels, engines):
            if "items_per_s" in row:
                row["gflops_per_item"] = flops / 1e9
                row["pct_of_bf16_matmul_peak"] = 100 * flops * row["items_per_s"] / rate_bf16
            rows.append(row)
    load_after = os.getloadavg()
    print(f"\nCPU: {machine()['cpu']} ({cpu_kind()}), {torch.get_num_threads()} threads; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; bf16 matmul {rate_bf16 / 1e9:.0f} GFLOP/s\n")
    print(table(rows, ["backbone", "engine", "items", "items_per_s", "ratio_to_first", "rel_diff_vs_first", "probe_acc",
                       "pct_of_bf16_matmul_peak", "skipped"]))
    print()
    print(table(profile, ["stage", "where", "ms_per_image"]))
    write_results("extraction_engines", {"cpu_kind": cpu_kind(), "load_average": {"before": load_before,
                                                                                 "after": load_after},
                                         "matmul_gflops_bf16": rate_bf16 / 1e9,
                                         "rows": rows, "profile": profile, "args": vars(args)})


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    main()
