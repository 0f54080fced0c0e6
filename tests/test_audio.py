"""Audio, the third modality: decoding, the speech embedding against ONNX Runtime, fit/evaluate/predict, finetune,
pretraining on log-mel spectrograms, Hugging Face audio encoders, and bad recordings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from typer.testing import CliRunner

from headstart.backbones import resolve_backbone
from headstart.cli import app
from headstart.errors import InputTooLarge, SettingsError
from headstart.modalities import get_modality
from headstart.modalities.audio import AudioWaveforms, Clip, load_audio, pad_waveforms
from headstart.runtime.audio_codec import MAX_BATCH_SECONDS, AudioCodec

from ._memory import peak_growth_mb
from .conftest import SHARED, make_audio_folder

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error:") and fragment in " ".join(result.stderr.split()), result.stderr
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------ decoding


def test_audio_is_mixed_to_mono_and_resampled(tmp_path):
    t = np.arange(8000) / 8000
    left = np.sin(2 * np.pi * 440 * t)
    soundfile.write(tmp_path / "stereo.wav", np.stack([left, -left], 1).astype(np.float32), 8000)
    soundfile.write(tmp_path / "tone.flac", left.astype(np.float32), 8000)
    assert np.abs(load_audio(tmp_path / "stereo.wav", 8000)).max() < 1e-4  # opposite channels cancel (16-bit file)
    tone = load_audio(tmp_path / "tone.flac", 16000)
    assert tone.dtype == np.float32 and len(tone) == 16000
    spectrum = np.abs(np.fft.rfft(tone))
    assert abs(np.argmax(spectrum) * 16000 / len(tone) - 440) < 2  # the pitch survives resampling
    assert len(load_audio(Clip(left.astype(np.float32), 8000), 22050)) == 22050


def test_short_clips_are_centred_in_silence():
    batch = pad_waveforms([torch.ones(4), torch.ones(10)], min_samples=8)
    assert batch["length"].tolist() == [8, 10]
    assert batch["waveform"][0].tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]


def test_an_hour_long_recording_is_refused_from_its_header_in_every_path(tmp_path):
    """An hour of audio (a 90 kB FLAC; 4.2 GB at the audio smallcnn's peak when it was read whole) is refused
    before decoding when read for training or prediction, by the exported graph's codec and by extraction, which
    still embeds the short clip beside it; resident memory grows by far less than the decoded hour (345 MB)."""
    growth, result = peak_growth_mb(
        setup=f"""
            import torch
            from headstart.backbones.smallcnn_audio import AudioSmallCNN
            from headstart.embeddings import compute_embeddings
            from headstart.errors import InputTooLarge
            from headstart.runtime.audio_codec import AudioCodec, load_audio
            from tests._memory import flac_of_silence
            hour, short = {str(tmp_path / "hour.flac")!r}, {str(tmp_path / "short.flac")!r}
            open(hour, "wb").write(flac_of_silence(3600))
            open(short, "wb").write(flac_of_silence(1))
            net, codec = AudioSmallCNN(), AudioCodec({{"sample_rate": 16000, "min_samples": 16000}}, None)
            compute_embeddings(net, [short], device=torch.device("cpu"))  # first-call set-up
        """,
        action="""
            result = []
            for read in (lambda: load_audio(hour, 16000), lambda: load_audio(hour, None), lambda: codec.prepare(hour)):
                try:
                    read()
                except InputTooLarge as e:
                    result.append(str(e))
            embeddings, failures = compute_embeddings(net, [hour, short], device=torch.device("cpu"))
            result.append([failures, bool(abs(embeddings[1]).sum() > 0)])
        """)
    message = "the recording is 3,600.0 s long; the longest taken is 600 s (HEADSTART_MAX_AUDIO_SECONDS sets it)"
    assert result == [message] * 3 + [[[[0, message]], True]]
    assert growth < 100, f"resident memory grew by {growth:.0f} MB"


def test_the_longest_recording_is_set_by_the_environment(tmp_path, monkeypatch):
    soundfile.write(tmp_path / "two.wav", np.zeros(16000, np.float32), 8000)
    assert len(load_audio(tmp_path / "two.wav", 8000)) == 16000
    monkeypatch.setenv("HEADSTART_MAX_AUDIO_SECONDS", "1.5")
    with pytest.raises(InputTooLarge, match=r"2\.0 s long; the longest taken is 1\.5 s \(HEADSTART_MAX_AUDIO_SECONDS"):
        load_audio(tmp_path / "two.wav", 8000)
    with pytest.raises(InputTooLarge, match=r"2\.0 s long"):
        load_audio(Clip(np.zeros(16000, np.float32), 8000), 8000)
    monkeypatch.setenv("HEADSTART_MAX_AUDIO_SECONDS", "an hour")
    with pytest.raises(SettingsError, match="HEADSTART_MAX_AUDIO_SECONDS='an hour': give a positive number"):
        load_audio(tmp_path / "two.wav", 8000)


class _Backbone:
    sample_rate, min_samples = 100, 50


def test_long_clips_are_batched_alone_within_the_audio_budget():
    """At most MAX_BATCH_SECONDS of padded audio a batch, in extraction and in the exported graph's batches."""
    seconds = [1, 2, 500, 3, 40, 40, 40, 40, 40, 40, 40, 40, 0.2, 1]
    clips = [Clip(np.full(int(s * 100), 0.1, np.float32), 100) for s in seconds]
    batches = list(get_modality("audio").extraction_batches(_Backbone(), clips, batch_size=64))
    assert [i for _, idx, _ in batches for i in idx.tolist()] == list(range(len(clips)))
    sizes = [len(idx) for _, idx, _ in batches]
    assert sizes == [2, 1, 8, 3]  # the 500 s clip alone; 8 x 40 s = 320 s; a ninth would pass the budget
    assert all(inputs["waveform"].numel() <= MAX_BATCH_SECONDS * 100 or len(idx) == 1 for inputs, idx, _ in batches)
    codec = AudioCodec({"sample_rate": 100, "min_samples": 50}, None)
    prepared = sorted((c.samples for c in clips), key=codec.sort_key)
    ends = codec.batch_ends(prepared, batch_size=4)
    assert ends[-1] == len(prepared) and ends == sorted(set(ends))
    for start, end in zip([0, *ends], ends):
        assert end - start <= 4 and ((end - start) * max(len(c) for c in prepared[start:end]) <= 32000
                                     or end - start == 1)


def test_fine_tuning_sees_a_window_of_a_long_clip():
    ramp = np.linspace(-1, 1, 3000, dtype=np.float32)
    middle = AudioWaveforms([Clip(ramp, 100)], 100, np.array([0]), crop_samples=1000)[0][0]
    assert torch.equal(middle, torch.from_numpy(ramp[1000:2000]))
    training = AudioWaveforms([Clip(ramp, 100)], 100, np.array([0]), seed=0, augment=True, crop_samples=1000)
    assert [len(training[epoch][0]) for epoch in range(3)] == [1000] * 3
    short = AudioWaveforms([Clip(ramp[:500], 100)], 100, np.array([0]), crop_samples=1000)[0][0]
    assert len(short) == 500


# ------------------------------------------------------------------------------------------------ speech embedding


def _real_or_synthetic_clips(tmp_path: Path, n: int = 50) -> list[Path]:
    """50 FSDD recordings when the shared copy is there, else synthesised tones (the test runs either way)."""
    fsdd = SHARED / "audio" / "fsdd" / "train"
    files = sorted(fsdd.glob("*/*.wav"))
    if files:
        return files[:: max(1, len(files) // n)][:n]
    return sorted(make_audio_folder(tmp_path / "tones", per_class=17).rglob("*.wav"))[:n]


def test_speech_embedding_equals_onnx_runtime(tmp_path):
    """The PyTorch module against openWakeWord's two ONNX graphs run by ONNX Runtime on the same clips: mel over
    the whole clip, windows of 76 frames every 8, mean, max and standard deviation. Tolerance: 1e-5 of the
    largest value (measured: 9e-7, the difference between two fp32 convolution implementations)."""
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is needed to run the reference graphs")
    from headstart.backbones.speech_embedding import EMBEDDING_FILE, MEL_FILE, openwakeword_models

    net = resolve_backbone("speech_embedding").eval()
    folder = openwakeword_models()
    mel = ort.InferenceSession(str(folder / MEL_FILE), providers=["CPUExecutionProvider"])
    emb = ort.InferenceSession(str(folder / EMBEDDING_FILE), providers=["CPUExecutionProvider"])
    clips = _real_or_synthetic_clips(tmp_path)
    assert len(clips) == 50
    worst = 0.0
    for path in clips:
        x = load_audio(path, 16000)
        batch = pad_waveforms([torch.from_numpy(x)], net.min_samples)
        x = batch["waveform"][0].numpy()
        frames = mel.run(None, {"input": (x * 32768)[None].astype(np.float32)})[0].squeeze() / 10 + 2
        windows = np.stack([frames[i:i + 76] for i in range(0, len(frames) - 75, 8)])
        per_window = emb.run(None, {"input_1": windows[..., None].astype(np.float32)})[0].reshape(len(windows), 96)
        reference = np.concatenate([per_window.mean(0), per_window.max(0), per_window.std(0)])
        with torch.no_grad():
            ours = net(batch)[0].numpy()
        worst = max(worst, float(np.abs(ours - reference).max() / np.abs(reference).max()))
    assert worst < 1e-5, worst


def test_speech_embedding_batches_like_single_clips(shared_audio_folder):
    """Padding a clip into a batch of longer ones changes nothing: windows past a clip's end are masked."""
    net = resolve_backbone("speech_embedding").eval()
    waves = [torch.from_numpy(load_audio(p, 16000)) for p in sorted(shared_audio_folder.rglob("*.wav"))[:6]]
    with torch.no_grad():
        together = net(pad_waveforms(waves, net.min_samples))
        alone = torch.cat([net(pad_waveforms([w], net.min_samples)) for w in waves])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_speech_embedding_spec_keeps_its_pooling(shared_audio_folder):
    """A model saved before the standard deviation joined the pooling (spec "mean+max over windows") reloads as
    192-d mean+max, so its head still fits; the default and a reloaded default stay 288-d."""
    from headstart.backbones.speech_embedding import SpeechEmbedding
    from headstart.errors import BackboneError

    old = SpeechEmbedding.from_spec({"family": "speech_embedding", "pooling": "mean+max over windows"}, Path("."))
    new = SpeechEmbedding.from_spec(resolve_backbone("speech_embedding").spec, Path("."))
    wave = torch.from_numpy(load_audio(sorted(shared_audio_folder.rglob("*.wav"))[0], 16000))
    with torch.no_grad():
        assert old.eval()(pad_waveforms([wave], old.min_samples)).shape == (1, old.embedding_dim) == (1, 192)
        assert new.eval()(pad_waveforms([wave], new.min_samples)).shape == (1, new.embedding_dim) == (1, 288)
    with pytest.raises(BackboneError, match="pooling 'mean\\+median'"):
        SpeechEmbedding(("mean", "median"))


def test_missing_speech_embedding_files_say_what_to_install(tmp_path):
    from headstart.errors import BackboneError

    with pytest.raises(BackboneError, match=r"melspectrogram.onnx is missing.*openwakeword==0.4.0"):
        resolve_backbone("speech_embedding", weights=str(tmp_path))


# ------------------------------------------------------------------------------------------------ the command line


def test_fit_evaluate_predict_audio(shared_audio_folder, tmp_path):
    out = tmp_path / "run"
    result = run("fit", shared_audio_folder, "--backbone", "speech_embedding", "--out", out, "--test-size", "0.25")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "metrics.json").read_text())["accuracy"] >= 0.9
    manifest = json.loads((out / "model" / "headstart.json").read_text())
    assert manifest["modality"] == "audio"
    assert {"sample_rate": 16000, "window_frames": 76, "window_hop_frames": 8}.items() <= manifest["backbone"].items()
    assert "mean+max" in manifest["backbone"]["pooling"]

    result = run("evaluate", out / "model", shared_audio_folder, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"] >= 0.9

    one = next(iter(sorted((shared_audio_folder / "high").glob("*.wav"))))
    result = run("predict", out / "model", one, shared_audio_folder / "low")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 1 + len(list((shared_audio_folder / "low").glob("*.wav")))
    assert records[0]["label"] == "high" and sum(r["label"] == "low" for r in records[1:]) >= len(records) - 2

    from headstart import TrainedModel

    model = TrainedModel.load(out / "model")
    assert model.predict([one]) == ["high"]

    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    one_line_error(run("predict", out / "model", tmp_path / "photo.png"), "is an image file, but this model takes recordings")
    one_line_error(run("predict", out / "model", tmp_path / "nothing.wav"), "input not found")


def test_finetune_moves_the_speech_embedding(tmp_path):
    """Fails if the backbone stayed frozen: every stage of the saved encoder differs from the published weights,
    the fixed mel frontend does not, and the model reloads to the same predictions. At lr 3e-4: with four
    validation tones the family's 1e-3 can end below the head stage, and fit then keeps the head-stage model."""
    import headstart
    from headstart.strategies import FineTune

    data = make_audio_folder(tmp_path / "data", per_class=16, seed=1)
    published = resolve_backbone("speech_embedding")
    model = headstart.fit(data, "speech_embedding", FineTune(epochs=3, batch_size=16, lr=3e-4), out=tmp_path / "run")
    assert "kept" not in model.manifest.training["finetune"]
    tuned = model.backbone
    for before, after in zip(published.encoder.stages, tuned.encoder.stages):
        assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters()))
    assert torch.equal(published.frontend.mel, tuned.frontend.mel)
    files = sorted(data.rglob("*.wav"))[:6]
    assert headstart.load(tmp_path / "run" / "model").predict(files) == model.predict(files)


def test_smallcnn_means_the_audio_variant_for_audio_data(shared_audio_folder, tmp_path):
    from headstart.backbones.smallcnn_audio import AudioSmallCNN

    assert isinstance(resolve_backbone("smallcnn", modality="audio"), AudioSmallCNN)
    assert not isinstance(resolve_backbone("smallcnn"), AudioSmallCNN)
    out = tmp_path / "run"
    result = run("fit", shared_audio_folder, "--backbone", "smallcnn", "--strategy", "finetune", "--epochs", "3",
                 "--out", out)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "model" / "headstart.json").read_text())["backbone"]["family"] == "smallcnn_audio"


def test_an_image_backbone_on_audio_says_which_to_use(shared_audio_folder, tmp_path):
    one_line_error(run("fit", shared_audio_folder, "--backbone", "efficientnet_lite0", "--out", tmp_path / "r"),
                   "try --backbone speech_embedding")


def test_audio_embeddings_are_cached(shared_audio_folder):
    from headstart.embedding_cache import EmbeddingCache
    from headstart.embeddings import embed_items

    net = resolve_backbone("speech_embedding")
    files = sorted(shared_audio_folder.rglob("*.wav"))
    cache = EmbeddingCache(net.fingerprint()[:24])
    first, _ = embed_items(net, files, cache)
    net.forward = None  # a second pass must not run the model at all
    second, failures = embed_items(net, files, cache)
    assert not failures and np.array_equal(first, second)


# ------------------------------------------------------------------------------------------------ bad recordings


def _corrupt_header(path: Path) -> None:
    good = path.read_bytes()
    path.write_bytes(good[:12] + b"\xff" * 32 + good[44:])


BAD_AUDIO = {
    "zero bytes": lambda p: p.write_bytes(b""),
    "text named .wav": lambda p: p.write_text("this is not a recording\n"),
    "corrupt header": _corrupt_header,
    "zero-length signal": lambda p: soundfile.write(p, np.zeros(0, np.float32), 16000),
}


@pytest.mark.parametrize("kind", sorted(BAD_AUDIO))
def test_unreadable_audio_is_skipped_with_a_count(kind, tmp_path):
    data = make_audio_folder(tmp_path / "data", per_class=5)
    bad = data / "low" / "bad.wav"
    soundfile.write(bad, np.zeros(800, np.float32), 8000)
    BAD_AUDIO[kind](bad)
    result = run("fit", data, "--backbone", "speech_embedding", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "1 unreadable recording(s) skipped" in " ".join(result.stderr.split())
    assert "Traceback" not in result.output
    one_line_error(run("fit", data, "--backbone", "speech_embedding", "--strict", "--out", tmp_path / "strict"),
                   "unreadable recording(s) skipped")


# ------------------------------------------------------------------------------------------------ Hugging Face audio


def tiny_wav2vec2_folder(root: Path) -> Path:
    """A randomly initialised 2-layer wav2vec 2.0 saved as a Hugging Face folder: the real loading code runs, with
    no download."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                            num_conv_pos_embedding_groups=2, vocab_size=10, feat_extract_norm="layer",
                            do_stable_layer_norm=True)
    Wav2Vec2Model(config).save_pretrained(root)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True, return_attention_mask=True).save_pretrained(root)
    return root


def test_hugging_face_audio_folder_fits_saves_and_reloads(shared_audio_folder, tmp_path):
    from headstart import TrainedModel
    from headstart.backbones.hf_audio import HFAudioBackbone

    folder = tiny_wav2vec2_folder(tmp_path / "w2v")
    net = resolve_backbone(str(folder))
    assert isinstance(net, HFAudioBackbone) and net.modality == "audio" and net.embedding_dim == 32
    assert len(net.layer_groups()) >= 3  # feature encoder, each transformer layer, the rest
    out = tmp_path / "run"
    result = run("fit", shared_audio_folder, "--backbone", folder, "--out", out)
    assert result.exit_code == 0, result.output
    files = sorted(shared_audio_folder.rglob("*.wav"))[:5]
    model = TrainedModel.load(out / "model")
    assert model.backbone.spec["family"] == "hf_audio"
    np.testing.assert_allclose(model.predict_proba(files), TrainedModel.load(out / "model").predict_proba(files),
                               atol=1e-5)


def test_hf_prefix_picks_the_audio_family_for_audio_data(tmp_path):
    from headstart.errors import BackboneError

    with pytest.raises(BackboneError, match="Hugging Face audio model 'nobody/nothing' is not available offline"):
        resolve_backbone("hf:nobody/nothing", modality="audio")
    with pytest.raises(BackboneError, match="Hugging Face model 'nobody/nothing' is not available offline"):
        resolve_backbone("hf:nobody/nothing", modality="text")


# ------------------------------------------------------------------------------------------------ pretraining


@pytest.mark.parametrize("objective", ["contrastive", "masked"])
def test_pretrain_on_unlabeled_audio_then_fit(objective, shared_audio_folder, tmp_path):
    """A few steps of each audio objective on log-mel spectrograms give a backbone folder that `fit` takes."""
    from headstart import TrainedModel

    out = tmp_path / "ckpt"
    result = run("pretrain", shared_audio_folder, "--objective", objective, "--backbone", "smallcnn", "--max-steps", "3",
                 "--batch-size", "8", "--out", out)
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "headstart-backbone.json").read_text())
    assert manifest["pretraining"]["data"]["modality"] == "audio"
    result = run("fit", shared_audio_folder, "--backbone", out, "--strategy", "finetune", "--epochs", "1",
                 "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert TrainedModel.load(tmp_path / "run" / "model").backbone.spec["family"] == "smallcnn_audio"


def test_audio_objectives_refuse_a_backbone_without_spectrograms(shared_audio_folder, tmp_path):
    one_line_error(run("pretrain", shared_audio_folder, "--objective", "masked", "--backbone", "speech_embedding",
                       "--max-steps", "1", "--out", tmp_path / "ckpt"), "take log-mel spectrograms, such as smallcnn")


# ------------------------------------------------------------------------------------------------ export and serve


def test_audio_model_exports_and_serves_uploads(tmp_path):
    """The speech-embedding classifier exports to ONNX with the parity check, the torch-free runtime predicts
    like the PyTorch model, and the server takes wav/flac uploads and answers a bad one with a 400 naming it."""
    pytest.importorskip("fastapi", reason="serving needs the serve extra")
    from fastapi.testclient import TestClient

    import headstart
    from headstart.export import export_onnx
    from headstart.serving import build_app

    data = make_audio_folder(tmp_path / "data", per_class=10, seed=2)
    headstart.fit(data, "speech_embedding", out=tmp_path / "run", val_size=9)
    report = export_onnx(tmp_path / "run" / "model")
    assert report.parity["top1_agreement"] == 1.0 and report.parity["max_abs_diff"] < 1e-4
    files = sorted(data.rglob("*.wav"))[::4]
    model, graph = headstart.load(tmp_path / "run" / "model"), headstart.load(tmp_path / "run" / "model", runtime="onnx")
    assert graph.predict(files) == model.predict(files)
    flac = tmp_path / "one.flac"
    soundfile.write(flac, load_audio(files[0], 16000), 16000)
    uploads = [("files", (f.name, f.read_bytes(), "audio/wav")) for f in files] + [
        ("files", (flac.name, flac.read_bytes(), "audio/flac"))]
    with TestClient(build_app(tmp_path / "run" / "model", runtime="onnx")) as client:
        response = client.post("/predict", files=uploads)
        assert response.status_code == 200, response.text
        assert [p["label"] for p in response.json()["predictions"]] == model.predict([*files, files[0]])
        bad = client.post("/predict", files=[("files", ("notes.wav", b"not a recording", "audio/wav"))])
        assert bad.status_code in (400, 422) and "notes.wav" in bad.text
        empty = client.post("/predict", files=[("files", ("empty.wav", b"", "audio/wav"))])
        assert empty.status_code in (400, 422) and "empty.wav" in empty.text
