"""The reference for `contrastive`: Hugging Face's `setfit` package on headstart's own SST-2 draws (issue 13).

Same five draws as benchmarks/few_shot_text.py (N sentences per class from SST-2's train.csv, drawn by
`make_splits` with seeds 0..4), the same minilm weights, the paper's settings (`num_iterations=20`, one epoch,
batch 16, body learning rate 2e-5, logistic-regression head); accuracy on dev.csv. One JSON line per draw.

`setfit` is not a headstart dependency. Install it, and the `datasets` versions it works with here, into a side
folder, then put that folder on PYTHONPATH:

  pip install --target /tmp/setfit-pkgs --no-deps setfit==1.2.0 datasets==5.2.0 evaluate==0.4.6
  pip install --target /tmp/setfit-pkgs "multiprocess<0.70.17" "dill<0.3.9" xxhash "pyarrow<20"
  PYTHONPATH=/tmp/setfit-pkgs python benchmarks/setfit_reference.py --labels 8 --seeds 5
  PYTHONPATH=/tmp/setfit-pkgs python benchmarks/setfit_reference.py --smoke   # tiny BERT, 2 labels (skips without setfit)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import _common  # noqa: E402
from _common import add_smoke_option, quiet_fits, shared, skip_smoke, start_smoke  # noqa: E402


def setfit_missing() -> str | None:
    """Why setfit cannot run here (None when its side install is on the path)."""
    try:
        import datasets.arrow_dataset  # noqa: F401
        import setfit  # noqa: F401
    except ImportError as e:
        return f"setfit is not installed ({e}); install it into a side folder as this script's docstring says"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=8, help="labels per class")
    parser.add_argument("--seeds", type=int, default=5, help="draws (seeds 0..N-1)")
    add_smoke_option(parser)
    args = parser.parse_args()
    data_folder, body, iterations = shared("text/sst2"), None, 20
    if args.smoke:
        folder = start_smoke()
        if setfit_missing():
            skip_smoke(setfit_missing())
        data_folder, body = _common.smoke_text_folder(folder / "text")
        args.labels, args.seeds, iterations = 2, 1, 1
    quiet_fits(_common.OUT / "cache")

    import datasets.arrow_dataset
    import numpy as np

    # datasets fingerprints each Dataset by pickling it with dill, which fails on this pyarrow's types; the
    # fingerprint only names cache files, so a random one is harmless here.
    datasets.arrow_dataset.generate_fingerprint = lambda *a, **k: uuid.uuid4().hex
    from setfit import SetFitModel, Trainer, TrainingArguments

    from headstart.backbones.hf_text import minilm_location
    from headstart.data import Splits, load_data, make_splits

    raw = load_data(data_folder)
    rows = []
    for seed in range(args.seeds):
        train = make_splits(Splits(raw.train, None, raw.val), 0.1, 0.2, args.labels, seed).train
        model = SetFitModel.from_pretrained(str(body or minilm_location()))
        settings = TrainingArguments(batch_size=16, num_epochs=1, num_iterations=iterations, body_learning_rate=2e-5,
                                     seed=seed, output_dir=str(_common.OUT / "setfit_checkpoints"))
        data = datasets.Dataset.from_dict({"text": list(train.items), "label": [int(y) for y in train.labels]})
        started = time.perf_counter()
        Trainer(model=model, args=settings, train_dataset=data).train()
        predicted = np.asarray(model.predict(list(raw.val.items)))
        accuracy = float((predicted == np.asarray(raw.val.labels)).mean())
        rows.append({"labels_per_class": args.labels, "seed": seed, "accuracy": accuracy,
                     "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(rows[-1]), flush=True)
    _common.write_results("setfit_reference", {"rows": rows})


if __name__ == "__main__":
    main()
