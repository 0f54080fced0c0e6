"""`predict --out FILE.jsonl|.csv|.parquet` at scale: streamed in chunks, one line per input in input order, the
same file from two ranks as from one, and a rerun after an interruption continues where the journal ends."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import headstart
from headstart.cli import app
from headstart.errors import HeadstartError
from headstart.runtime import prediction_files
from headstart.runtime.prediction_files import across_ranks, journal_path, write_prediction_file

from . import _on_two_ranks as on_two_ranks
from .conftest import HANG_GUARD_S, make_tiny_bert, write_text_table
from .test_distributed import launch_scenarios, launched, needs_gloo, needs_minilm

SETTINGS = {"model": "m", "top_k": 2}


def fake_records(chunk):
    """Records shaped like predict's, derived from the item alone; every fifth item unreadable."""
    return [{"input": str(i), "error": "unreadable"} if int(i) % 5 == 4 else
            {"input": str(i), "label": "odd" if int(i) % 2 else "even", "score": 0.5 + int(i) / 1000,
             "top_k": [{"label": "odd", "score": 0.6}, {"label": "even", "score": 0.4}]} for i in chunk]


class Counting:
    """A records function that remembers each chunk it was asked for, and can fail at a chosen call."""

    def __init__(self, fail_at_call: int | None = None):
        self.chunks: list[list] = []
        self.fail_at_call = fail_at_call

    def __call__(self, chunk):
        if len(self.chunks) == self.fail_at_call:
            raise KeyboardInterrupt  # as a kill: nothing of this chunk is written
        self.chunks.append(list(chunk))
        return iter(fake_records(chunk))


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_records_are_streamed_in_chunks_in_input_order(tmp_path):
    items = [str(i) for i in range(23)]
    spy = Counting()
    assert write_prediction_file(tmp_path / "p.jsonl", items, spy, settings=SETTINGS, chunk_items=5) == (23, 0)
    assert [len(c) for c in spy.chunks] == [5, 5, 5, 5, 3]  # never more than a chunk at a time
    assert _lines(tmp_path / "p.jsonl") == fake_records(items)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl"]  # journal and job record gone


def test_an_interrupted_job_resumes_after_its_last_complete_line(tmp_path):
    items = [str(i) for i in range(23)]
    write_prediction_file(tmp_path / "whole.jsonl", items, Counting(), settings=SETTINGS, chunk_items=5)
    out = tmp_path / "p.jsonl"
    with pytest.raises(KeyboardInterrupt):
        write_prediction_file(out, items, Counting(fail_at_call=2), settings=SETTINGS, chunk_items=5)
    assert not out.exists() and len(_lines(journal_path(out))) == 10
    with open(journal_path(out), "a") as f:
        f.write('{"input": "10", "lab')  # a line torn by the kill

    spy = Counting()
    assert write_prediction_file(out, items, spy, settings=SETTINGS, chunk_items=4) == (23, 10)
    assert [x for c in spy.chunks for x in c] == items[10:]  # the 10 written items are not predicted again
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert not journal_path(out).exists()


def test_another_jobs_journal_is_refused_not_mixed_in(tmp_path):
    out = tmp_path / "p.jsonl"
    with pytest.raises(KeyboardInterrupt):
        write_prediction_file(out, ["1", "2", "3"], Counting(fail_at_call=1), settings=SETTINGS, chunk_items=2)
    for items, settings in ((["1", "2", "4"], SETTINGS), (["1", "2", "3"], {**SETTINGS, "top_k": 3})):
        with pytest.raises(HeadstartError, match="holds predictions of another job"):
            write_prediction_file(out, items, Counting(), settings=settings, chunk_items=2)
    assert len(_lines(journal_path(out))) == 2  # kept for the job that began it


def test_an_empty_journal_of_another_job_is_simply_started_over(tmp_path):
    out = tmp_path / "p.jsonl"
    with pytest.raises(KeyboardInterrupt):
        write_prediction_file(out, ["1", "2"], Counting(fail_at_call=0), settings=SETTINGS)
    assert journal_path(out).read_text() == ""  # begun, nothing written: no work to lose
    assert write_prediction_file(out, ["7"], Counting(), settings=SETTINGS) == (1, 0)
    assert _lines(out) == fake_records(["7"])


def test_parquet_and_csv_hold_the_records_of_the_jsonl(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    monkeypatch.setattr(prediction_files, "CHUNK_ITEMS", 5)  # the conversion's chunks: row groups of 5
    items = [str(i) for i in range(12)]
    for suffix in (".jsonl", ".csv", ".parquet"):
        write_prediction_file(tmp_path / f"p{suffix}", items, Counting(), settings=SETTINGS, chunk_items=4)
    records = _lines(tmp_path / "p.jsonl")
    parquet = pq.ParquetFile(tmp_path / "p.parquet")
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)] == [5, 5, 2]
    rows = parquet.read().to_pylist()
    assert parquet.schema_arrow.names == ["input", "label", "score", "top_k", "error"]
    assert [{k: v for k, v in row.items() if v is not None} for row in rows] == records
    with open(tmp_path / "p.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["input"] for row in table] == items and table[4]["error"] == "unreadable"
    assert json.loads(table[0]["top_k"]) == records[0]["top_k"]


def test_an_empty_input_list_gives_an_empty_file(tmp_path):
    import pyarrow.parquet as pq

    for suffix in (".jsonl", ".parquet"):
        assert write_prediction_file(tmp_path / f"p{suffix}", [], Counting(), settings=SETTINGS) == (0, 0)
    assert (tmp_path / "p.jsonl").read_text() == "" and pq.read_table(tmp_path / "p.parquet").num_rows == 0


def test_memory_holds_a_chunk_of_records_not_the_whole_job(tmp_path):
    """.jsonl and .parquet files of 20,000 and of 100,000 records, in chunks of 2,000: the process grows as much
    for the one as for the other (holding the records would take 50 MB more for the larger job)."""
    from ._memory import peak_growth_mb

    def growth(n: int) -> float:
        setup = f"""
import pyarrow, pyarrow.parquet
from pathlib import Path
from headstart.runtime import prediction_files
prediction_files.CHUNK_ITEMS = 2000
pyarrow.array([{{"a": "x", "b": [{{"c": "y", "d": 1.0}}]}}])  # pyarrow's one-time start-up (some 50 MB)
folder = Path({str(tmp_path)!r}) / "{n}"
items = [f"{{i:06d}} " + "a long input text " * 20 for i in range({n})]
def records_for(chunk):
    return [{{"input": item, "label": "positive", "score": 0.75,
             "top_k": [{{"label": "positive", "score": 0.75}}, {{"label": "negative", "score": 0.25}}]}}
            for item in chunk]
"""
        action = """
for name in ("p.jsonl", "p.parquet"):
    prediction_files.write_prediction_file(folder / name, items, records_for, settings={}, chunk_items=2000)
result = pyarrow.parquet.read_metadata(folder / "p.parquet").num_rows
"""
        grown, rows = peak_growth_mb(setup, action)
        assert rows == n and len((tmp_path / str(n) / "p.jsonl").read_text().splitlines()) == n
        return grown

    small, large = growth(20_000), growth(100_000)
    assert large < 1.2 * small + 5, f"peak memory grew by {small:.0f} MB for 20,000 records, {large:.0f} MB for 100,000"


@needs_gloo
@needs_minilm
def test_two_ranks_each_predict_a_share_and_rank_0_writes_the_whole_file(ranks_root):
    """write_prediction_file with across_ranks on two ranks (the module's launch, on fake records): each item is
    predicted once, by one rank, and rank 0's file holds them all in order."""
    launched(ranks_root)
    folder = ranks_root / "writer"  # on_two_ranks.write_predictions_on_ranks
    seen = [json.loads((folder / f"seen-{rank}.json").read_text()) for rank in (0, 1)]
    assert seen[0] and seen[1] and sorted(seen[0] + seen[1], key=int) == [str(i) for i in range(23)]  # each once
    assert _lines(folder / "p.jsonl") == fake_records([str(i) for i in range(23)])


def test_across_ranks_is_the_function_itself_on_one_process():
    spy = Counting()
    assert list(across_ranks(spy)(["1", "2"])) == fake_records(["1", "2"]) and spy.chunks == [["1", "2"]]


# The real command, on a tiny BERT probe.

TEXTS = [f"a {word} film, take {i}" for i, word in enumerate(["wonderful", "dull", "lovely", "awful", "superb"] * 3)]


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-out")
    table = write_text_table(root / "reviews.csv", n_per_class=10)
    with on_two_ranks.one_thread():  # faster on a shared 2-core machine (the probe's 600 tiny head steps)
        headstart.fit(table, str(make_tiny_bert(root / "bert")), "probe", out=root / "run", max_length=32,
                      cache=False, seed=0)
    (root / "inputs.txt").write_text("\n".join(TEXTS) + "\n")
    return {"model": root / "run" / "model", "inputs": root / "inputs.txt"}


def _predict(text_model, out, *options):
    return CliRunner().invoke(app, ["predict", str(text_model["model"]), str(text_model["inputs"]), "--out", str(out),
                                    *map(str, options)])


@needs_minilm
def test_predict_out_resumes_an_interrupted_run_without_predicting_its_items_again(text_model, tmp_path,
                                                                                    monkeypatch):
    from headstart.model import TrainedModel

    whole = _predict(text_model, tmp_path / "whole.jsonl")
    assert whole.exit_code == 0, whole.output
    scores, asked = TrainedModel.scores, []

    def interrupted_at_the_third_chunk(self, items, *args, **kwargs):
        if len(asked) == 2:
            raise KeyboardInterrupt
        asked.append(list(items))
        return scores(self, items, *args, **kwargs)

    monkeypatch.setattr(TrainedModel, "scores", interrupted_at_the_third_chunk)
    _predict(text_model, tmp_path / "p.jsonl", "--chunk-size", 4)
    assert not (tmp_path / "p.jsonl").exists() and len(_lines(journal_path(tmp_path / "p.jsonl"))) == 8

    asked.clear()
    monkeypatch.setattr(TrainedModel, "scores", lambda self, items, *a, **k: asked.append(list(items)) or
                        scores(self, items, *a, **k))
    resumed = _predict(text_model, tmp_path / "p.jsonl", "--chunk-size", 4)
    assert resumed.exit_code == 0, resumed.output
    assert "wrote 15 predictions" in resumed.stderr and "8 of them kept" in resumed.stderr
    assert [x for chunk in asked for x in chunk] == TEXTS[8:]  # the first 8 were not predicted again
    assert _lines(tmp_path / "p.jsonl") == _lines(tmp_path / "whole.jsonl")


@needs_minilm
def test_predict_out_parquet_round_trips(text_model, tmp_path):
    import pyarrow.parquet as pq

    assert _predict(text_model, tmp_path / "p.jsonl").exit_code == 0
    result = _predict(text_model, tmp_path / "p.parquet", "--chunk-size", 6)
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.to_pylist() == _lines(tmp_path / "p.jsonl")  # the columns the records have (no error here)
    assert str(table.schema.field("top_k").type) == "list<element: struct<label: string, score: double>>"


@pytest.fixture(scope="module")
def ranks_root(text_model, tmp_path_factory) -> Path:
    """`predict --out` of the module's text model in this process (out/one.jsonl), then this module's two-rank
    scenarios (_on_two_ranks.predict) in one torchrun launch, with the embedding cache the first filled: ROOT with
    their files, their printed output, and launch.json (the launch's exit code and stderr)."""
    root = tmp_path_factory.mktemp("ranks")
    (root / "inputs.json").write_text(json.dumps({k: str(v) for k, v in text_model.items()}))
    (root / "out").mkdir()
    with on_two_ranks.one_thread(), pytest.MonkeyPatch.context() as patch:
        patch.setenv("HEADSTART_CACHE", str(root / "cache-predict"))
        one = _predict(text_model, root / "out" / "one.jsonl", "--chunk-size", 4)
    (root / "one.json").write_text(json.dumps({"exit_code": one.exit_code, "output": one.output}))
    return launch_scenarios("predict", root)


@needs_gloo
@needs_minilm
def test_predict_on_two_ranks_gives_the_single_process_file_and_lines(ranks_root):
    """`predict --out` here in one process and on two ranks (the module's launch): the same records, each item once
    in input order, one report and no file besides the two outputs; without --out, rank 0's lines alone."""
    one = json.loads((ranks_root / "one.json").read_text())
    assert one["exit_code"] == 0, one["output"]
    launched(ranks_root, "predict-out", "predict-stdout")
    single, ranks = _lines(ranks_root / "out" / "one.jsonl"), _lines(ranks_root / "out" / "two.jsonl")
    assert [r["input"] for r in ranks] == TEXTS  # each item once, in input order
    assert [r["label"] for r in ranks] == [r["label"] for r in single]
    assert [r["score"] for r in ranks] == pytest.approx([r["score"] for r in single], abs=1e-5)
    assert on_two_ranks.printed(ranks_root, "predict-out", "stderr").count("wrote 15 predictions") == 1  # rank 0
    assert sorted(p.name for p in (ranks_root / "out").iterdir() if p.is_file()) == ["one.jsonl", "two.jsonl"]
    printed = on_two_ranks.printed(ranks_root, "predict-stdout", "stdout")  # no --out: stdout
    assert [json.loads(line)["input"] for line in printed.splitlines()] == TEXTS  # rank 0's lines alone


def test_a_bad_chunk_size_or_out_type_is_refused_before_any_work(tmp_path):
    for options, message in (([tmp_path / "p.txt"], "give a .csv, .jsonl or .parquet file"),
                             ([tmp_path / "p.jsonl", "--chunk-size", 0], "--chunk-size must be at least 1")):
        result = CliRunner().invoke(app, ["predict", str(tmp_path / "no-model"), "x", "--out", *map(str, options)])
        assert result.exit_code == 2 and message in result.stderr


def test_writing_a_prediction_file_needs_no_torch(tmp_path):
    """The ONNX deployment writes --out files too: the writer and its rank helpers import torch only under torchrun."""
    code = ("import json, sys\nfrom pathlib import Path\n"
            "from headstart.runtime.prediction_files import across_ranks, write_prediction_file\n"
            f"for name in ('p.jsonl', 'p.parquet'):\n"
            f"    write_prediction_file(Path({str(tmp_path)!r}) / name, ['x'], "
            "across_ranks(lambda c: [{'input': i, 'error': 'unreadable'} for i in c]), settings={})\n"
            "print(json.dumps('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=HANG_GUARD_S)
    assert out.stdout.strip() == "false"
    assert _lines(tmp_path / "p.jsonl") == [{"input": "x", "error": "unreadable"}]
