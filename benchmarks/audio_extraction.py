"""Audio extraction speed (issue 10): headstart's path against a naive one-clip-at-a-time loop, side by side.

    python benchmarks/audio_extraction.py [--clips 1000] [--repeats 3]

Clips: FSDD recordings resampled to 16 kHz and centred in exactly one second (real speech, 1-second files).
Naive = what one writes first: decode each file in the main process, run the same `speech_embedding` module in
fp32 eager on that one clip, next clip. Naive window by window = the same, but one 76-frame window per encoder
call, as the published ONNX graph takes them. headstart = `compute_embeddings`: decoding in a worker process, batches
of 64, channels_last, bfloat16 autocast where the CPU has it, inference mode, and the window encoder run once
over each clip instead of once per window. Medians of interleaved repeats; also the largest relative difference
between the two paths' embeddings.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_smoke_option, machine, median, shared, smoke_audio, start_smoke, table, timed, write_results

from headstart.backbones import resolve_backbone
from headstart.embeddings import compute_embeddings
from headstart.modalities.audio import load_audio, pad_waveforms

RATE = 16_000


def one_second_clips(n: int, folder: Path, source: Path | None = None) -> list[Path]:
    """`n` recordings of `source` (default: FSDD) spread over its files, each resampled and centred in 1 s."""
    files = sorted((source or shared("audio/fsdd/train")).glob("*/*.wav"))
    files = [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]
    out = []
    for i, f in enumerate(files):
        x = load_audio(f, RATE)[:RATE]
        left = (RATE - len(x)) // 2
        path = folder / f"{i:04d}.wav"
        soundfile.write(path, np.pad(x, (left, RATE - len(x) - left)), RATE)
        out.append(path)
    return out


def naive(net, files: list[Path]) -> np.ndarray:
    net.eval().to(memory_format=torch.contiguous_format)
    rows = []
    with torch.no_grad():
        for f in files:
            x, _ = soundfile.read(f, dtype="float32")  # written at 16 kHz
            rows.append(net(pad_waveforms([torch.from_numpy(x)], net.min_samples))[0].numpy())
    return np.stack(rows)


def naive_windows(net, files: list[Path]) -> np.ndarray:
    """One clip at a time and one 76-frame window per encoder call, as the published ONNX graph takes them."""
    from headstart.backbones.speech_embedding import HOP, N_FFT, WINDOW_FRAMES, WINDOW_HOP_FRAMES

    net.eval().to(memory_format=torch.contiguous_format)
    rows = []
    with torch.no_grad():
        for f in files:
            x, _ = soundfile.read(f, dtype="float32")
            batch = pad_waveforms([torch.from_numpy(x)], net.min_samples)
            frames = (batch["length"] - N_FFT) // HOP + 1
            mel = net.frontend(batch["waveform"], frames)
            windows = [net.encoder(mel[:, k:k + WINDOW_FRAMES])[0, :, 0]
                       for k in range(0, mel.shape[1] - WINDOW_FRAMES + 1, WINDOW_HOP_FRAMES)]
            emb = torch.stack(windows)
            rows.append(torch.cat([emb.mean(0), emb.amax(0), emb.std(0, unbiased=False)]).numpy())
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    add_smoke_option(parser)
    args = parser.parse_args()
    source = None
    if args.smoke:  # four generated tones instead of FSDD, one repeat
        source = smoke_audio(start_smoke() / "tones", per_class=2)
        args.clips, args.repeats = 4, 1
    folder = Path(tempfile.mkdtemp(prefix="headstart-audio-clips-"))
    files = one_second_clips(args.clips, folder, source)
    net = resolve_backbone("speech_embedding")
    naive_times, window_times, fast_times = [], [], []
    for _ in range(args.repeats):
        t, reference = timed(lambda: naive(net, files))
        naive_times.append(t)
        t, per_window = timed(lambda: naive_windows(net, files))
        window_times.append(t)
        assert np.abs(per_window - reference).max() <= 1e-3 * np.abs(reference).max()
        t, (fast, failures) = timed(lambda: compute_embeddings(net, files))
        fast_times.append(t)
        assert not failures
    diff = float(np.abs(fast - reference).max() / np.abs(reference).max())
    row = {"clips": len(files), "clip_seconds": 1.0, "naive clips/s": len(files) / median(naive_times),
           "naive window-by-window clips/s": len(files) / median(window_times),
           "headstart clips/s": len(files) / median(fast_times), "speedup": median(naive_times) / median(fast_times),
           "speedup vs window-by-window": median(window_times) / median(fast_times),
           "max rel. diff (bf16 vs fp32)": diff}
    print(table([row], list(row)))
    write_results("audio_extraction", {"rows": [row], "naive_s": naive_times, "naive_windows_s": window_times,
                                       "headstart_s": fast_times,
                                       "machine": machine()})


if __name__ == "__main__":
    main()
