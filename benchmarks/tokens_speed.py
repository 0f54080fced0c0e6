"""Issue 23 acceptance: the speed of `predict` for a token tagger, PyTorch against its ONNX graphs (fp32 and int8),
side by side in one process. Not a test: the lead engineer runs it.

Takes a trained tagger (a run folder or its model folder, e.g. the WNUT-17 minilm finetune of tokens_accuracy.py),
exports it with `headstart export` (fp32, then `--quantize int8`; graphs written beside the model unless there
already) and predicts the first 1,000 WNUT-17 dev sentences given as raw text with each runtime: PyTorch (the
model's own precision: fp32 on a CPU without bf16, else bf16 autocast; `--torch-precision` sets it), ONNX Runtime
fp32 and ONNX Runtime int8 (dynamic: int8 weights). One untimed warm-up call each, then `--repeats` timed calls
(the median is reported). Also records how many of the entities each runtime finds agree with PyTorch's (type and
character offsets) and the int8 graph's entity F1 change that `export` measured.

  PYTHONPATH=src nice -n 5 python benchmarks/tokens_speed.py --model benchmarks/out/runs/wnut17-minilm-finetune \\
      --data ../shared/datasets/text/wnut17/train.conll
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import _common
from _common import add_smoke_option, quiet_fits, shared, start_smoke, table, write_results

COLUMNS = ["runtime", "sentences", "seconds", "sentences/s", "x PyTorch", "entities", "same as PyTorch"]
SENTENCES = 1000


def _raw_sentences(conll: Path, n: int) -> list[str]:
    """The first `n` sentences of a CoNLL file as raw text (words joined by spaces), repeated to `n` if fewer."""
    from headstart.data.conll import read_conll_sentences

    words = read_conll_sentences(conll)[0]
    return [" ".join(words[i % len(words)]) for i in range(n)]


def _spans(found: list[list[dict[str, Any]]]) -> list[set[tuple]]:
    return [{(e["type"], e["start"], e["end"]) for e in entities} for entities in found]


def _time(predict: Any, texts: list[str], repeats: int) -> tuple[float, list]:
    predict(texts[:32])  # warm-up: sessions, kernels, the tokenizer
    times, found = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        found = predict(texts)
        times.append(time.perf_counter() - started)
    return _common.median(times), found


def smoke_model(folder: Path) -> tuple[Path, Path, Path]:
    """A tiny tagger fitted on generated sentences (tokens_accuracy's smoke data), with its train and dev files."""
    from tokens_accuracy import smoke_data

    import headstart

    train, dev, bert = smoke_data(folder / "data")
    headstart.fit(train, bert, "finetune", out=folder / "run", epochs=1, max_length=16, batch_size=16, cache=False)
    return folder / "run", train, dev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="the trained tagger (run folder or model folder)")
    parser.add_argument("--data", type=Path, default=None,
                        help="its labeled data, when not where its manifest says (export checks parity on them)")
    parser.add_argument("--dev", type=Path, default=None, help="CoNLL sentences to predict (default WNUT-17 dev)")
    parser.add_argument("--sentences", type=int, default=SENTENCES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--force-int8", action="store_true",
                        help="write the int8 graph even when it loses more than 1 point of entity F1 (export --force)")
    parser.add_argument("--torch-precision", default=None, help="auto, fp32 or bf16 (default: the model's)")
    add_smoke_option(parser)
    args = parser.parse_args()
    quiet_fits(_common.OUT / "cache")
    if args.smoke:
        folder = start_smoke()
        args.model, args.data, args.dev = smoke_model(folder)
        args.sentences, args.repeats = 40, 1
    elif args.model is None:
        raise SystemExit("--model is required (a trained tagger, e.g. from benchmarks/tokens_accuracy.py)")
    dev = args.dev or shared("text/wnut17/dev.conll")

    import headstart
    from headstart.export import export_onnx
    from headstart.runtime import load as load_graph
    from headstart.runtime.onnx_model import GRAPH, INT8_GRAPH

    model_dir = args.model / "model" if (args.model / "model").is_dir() else args.model
    exports = {}
    for quantize, graph in ((None, GRAPH), ("int8", INT8_GRAPH)):
        if not (model_dir / graph).is_file():
            report = export_onnx(model_dir, quantize=quantize, data=args.data, force=bool(args.smoke or args.force_int8))
            exports[graph] = {"seconds": report.seconds, "parity": report.parity, "quantization": report.quantization}
    texts = _raw_sentences(dev, args.sentences)
    threads = int(os.environ.get("HEADSTART_THREADS", 0)) or None
    runtimes = {"PyTorch": headstart.load(model_dir, precision=args.torch_precision),
                "ONNX Runtime fp32": load_graph(model_dir, threads=threads),
                "ONNX Runtime int8": load_graph(model_dir, int8=True, threads=threads)}
    rows, reference = [], None
    for name, predictor in runtimes.items():
        seconds, found = _time(predictor.predict, texts, args.repeats)
        spans = _spans(found)
        reference = reference or spans
        same = sum(len(a & b) for a, b in zip(spans, reference)) / max(1, sum(len(b) for b in reference))
        precision = getattr(predictor, "precision", None)
        rows.append({"runtime": name + (f" ({precision})" if precision else ""), "sentences": len(texts),
                     "seconds": round(seconds, 2), "sentences/s": round(len(texts) / seconds, 1),
                     "entities": sum(len(s) for s in spans), "same as PyTorch": f"{same:.1%}"})
        print(rows[-1], flush=True)
    for row in rows:
        row["x PyTorch"] = round(row["sentences/s"] / rows[0]["sentences/s"], 2)
    int8 = load_graph(model_dir, int8=True).manifest.quantization or {}
    print(table(rows, COLUMNS))
    print(f"int8 entity F1 change measured by export: {int8.get('accuracy_fp32')} -> {int8.get('accuracy_int8')} "
          f"on {int8.get('test_items')} test sentences")
    write_results("tokens_speed", {"model": str(model_dir), "load_average": os.getloadavg(), "rows": rows,
                                   "exports": exports, "int8": int8, "table": table(rows, COLUMNS),
                                   "repeats": args.repeats, "threads": threads})


if __name__ == "__main__":
    main()
