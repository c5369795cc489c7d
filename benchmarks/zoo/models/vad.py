"""Silero VAD (``silero-vad``'s ``silero_vad_op18_ifless.onnx``) on ALSA's spoken test clips.

The model is streaming: every call takes 512 new samples at 16 kHz preceded by the last 64
samples of the previous call (``input [B, 576]``), the recurrent state ``state [2, B, 128]``
and the sample rate ``sr`` (int64 scalar), and returns the speech probability ``output
[B, 1]`` and the next state ``stateN [2, B, 128]``. One zoo sample is one such call: the
window and the state the float model itself carried into it while streaming its clip from
a zero state and zero context, chunk after chunk, as the package's ONNX wrapper does.
Despite the file's name ("ifless": no LSTM op, no weights hidden in subgraphs), the graph is
one top-level ``If`` on ``sr == 16000`` whose branches are the 16 kHz and 8 kHz networks,
both reading top-level initializers; ``sr`` is a constant here, so only the 16 kHz branch runs.

Audio: Debian ``alsa-utils`` ships eight spoken channel names ("Front Center", ...) and a
noise clip, 48 kHz mono 16-bit, about 1.4 s each. Calibration and evaluation use different
speech clips; the noise clip is cut in two at a chunk boundary (first part calibration,
rest evaluation) and each part is streamed on its own, so both sets contain non-speech.
Calibration streams are also replayed once at a lower gain and shifted start (allowed for
calibration only) to widen the levels and chunk alignments it sees.

There are no human labels; the metric is agreement of the speech decisions with FP32.
"""

from __future__ import annotations

from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.zoo.build import BuildContext, Built

PYPI_PACKAGES = ("silero-vad",)
DEBIAN_PACKAGES = ("alsa-utils",)
DESCRIPTION = (
    "Silero VAD v6 (opset 18, LSTM unrolled to Gemm, 16/8 kHz nets in one top-level If on sr) "
    "streaming 32 ms chunks of ALSA's spoken test clips and noise at 16 kHz."
)
METRIC = "decision_agreement"

_MODEL_FILE = "silero_vad/data/silero_vad_op18_ifless.onnx"
_SOUNDS = "usr/share/sounds/alsa"
_RATE = 16000
_CHUNK = 512  # new samples per call at 16 kHz (the only size the 16 kHz model accepts)
_CONTEXT = 64  # samples of the previous call prepended to every chunk at 16 kHz
_THRESHOLD = 0.5  # the package's default speech threshold

# Speech clips split by name so that no recording is in both sets; each split covers the
# three positions (front, rear, side).
_CALIB_SPEECH = ("Front_Left", "Rear_Center", "Side_Right")
_EVAL_SPEECH = ("Front_Center", "Front_Right", "Rear_Left", "Rear_Right", "Side_Left")
_NOISE = "Noise"

# Resampler: Kaiser-windowed sinc, 16 zero crossings each side, cut-off slightly below the
# output Nyquist so that 48 kHz → 16 kHz does not alias.
_SINC_ZEROS = 16
_KAISER_BETA = 8.6
_ROLLOFF = 0.95


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Decode an integer-PCM WAV file to mono ``float32`` in [-1, 1].

    Parameters
    ----------
    path
        The ``.wav`` file.

    Returns
    -------
    tuple[np.ndarray, int]
        The samples (channels averaged) and the sample rate.
    """
    import wave  # noqa: PLC0415

    with wave.open(str(path), "rb") as w:
        channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:  # 8-bit WAV is unsigned
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif width == 3:  # no numpy dtype: assemble little-endian 24-bit words, then sign-extend
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        word = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = ((word ^ 0x800000) - 0x800000).astype(np.float64) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)
    else:
        raise ValueError(f"{path.name}: unsupported sample width {width} bytes")
    mono = data.reshape(-1, channels).mean(axis=1)
    return mono.astype(np.float32), rate


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample by the rational factor ``rate_out / rate_in`` with a windowed-sinc filter.

    Output sample ``n`` sits at input time ``t = n · down / up``; it is the sum of the input
    samples around ``t`` weighted by a Kaiser-windowed sinc whose cut-off is the lower of the
    two Nyquist frequencies. ``t``'s fractional part takes only ``up`` values, so the kernel
    is tabulated once per phase (polyphase). Outside the signal the input counts as zero.
    Computed in float64 with a fixed summation order, so the result is deterministic.

    Parameters
    ----------
    x
        Mono samples at ``rate_in``.
    rate_in, rate_out
        Sample rates in Hz.

    Returns
    -------
    np.ndarray
        ``float32`` samples at ``rate_out``, ``ceil(len(x) · rate_out / rate_in)`` of them.
    """
    g = gcd(rate_in, rate_out)
    up, down = rate_out // g, rate_in // g
    x = np.asarray(x, dtype=np.float64)
    if up == down:
        return x.astype(np.float32)
    fc = 0.5 * min(1.0, up / down) * _ROLLOFF  # cut-off in cycles per input sample
    half = _SINC_ZEROS / (2.0 * fc)  # kernel half-width in input samples
    reach = int(np.ceil(half))
    offsets = np.arange(-reach, reach + 1)  # input samples around floor(t)
    # kernel[p, j]: weight of input sample floor(t) + offsets[j] when frac(t) = p / up
    u = np.arange(up)[:, None] / up - offsets[None, :]
    inside = np.abs(u) < half
    ratio = np.clip(u / half, -1.0, 1.0)
    window = np.i0(_KAISER_BETA * np.sqrt(1.0 - ratio**2)) / np.i0(_KAISER_BETA)
    kernel = np.where(inside, 2.0 * fc * np.sinc(2.0 * fc * u) * window, 0.0)

    n_out = -(-len(x) * up // down)
    pos = np.arange(n_out, dtype=np.int64) * down
    base, phase = pos // up, pos % up
    padded = np.concatenate([np.zeros(reach), x, np.zeros(reach + 1)])
    out = np.zeros(n_out)
    for j in range(len(offsets)):
        out += kernel[phase, j] * padded[base + j]
    return out.astype(np.float32)


def _session(model_path: Path) -> Any:
    import onnxruntime as ort  # noqa: PLC0415

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1  # one thread: no reduction-order differences between runs
    return ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])


def stream(sess: Any, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the float model over a clip the way the package's streaming wrapper does.

    The clip is zero-padded to whole chunks; each call gets the chunk preceded by the last
    ``_CONTEXT`` samples of the previous window (zeros first) and the state the previous
    call returned (zeros first).

    Parameters
    ----------
    sess
        An onnxruntime session of the model.
    audio
        Mono ``float32`` samples at 16 kHz.

    Returns
    -------
    tuple[np.ndarray, np.ndarray, np.ndarray]
        Per chunk: the input windows ``[C, 576]``, the incoming states ``[C, 2, 128]``
        (sample-first) and the speech probabilities ``[C]``.
    """
    n_chunks = -(-len(audio) // _CHUNK)
    padded = np.zeros(n_chunks * _CHUNK, dtype=np.float32)
    padded[: len(audio)] = audio
    sr = np.array(_RATE, dtype=np.int64)
    context = np.zeros(_CONTEXT, dtype=np.float32)
    state = np.zeros((2, 1, 128), dtype=np.float32)
    windows, states, probs = [], [], []
    for c in range(n_chunks):
        window = np.concatenate([context, padded[c * _CHUNK : (c + 1) * _CHUNK]])
        prob, next_state = sess.run(
            ["output", "stateN"], {"input": window[None], "state": state, "sr": sr}
        )
        windows.append(window)
        states.append(state[:, 0, :])
        probs.append(float(prob[0, 0]))
        context = window[-_CONTEXT:]
        state = next_state
    return np.stack(windows), np.stack(states), np.asarray(probs)


def _clips(root: Path) -> dict[str, tuple[np.ndarray, int]]:
    """The ALSA clips at 16 kHz, keyed by name; checks that the expected ones are there."""
    paths = sorted((root / _SOUNDS).glob("*.wav"))
    found = {p.stem for p in paths}
    wanted = {*_CALIB_SPEECH, *_EVAL_SPEECH, _NOISE}
    if not wanted <= found:
        raise RuntimeError(f"zoo vad: alsa-utils lacks clips {sorted(wanted - found)}")
    out = {}
    for path in paths:
        if path.stem in wanted:
            audio, rate = read_wav(path)
            out[path.stem] = (resample(audio, rate, _RATE), rate)
    return out


def build(ctx: BuildContext) -> Built:
    """Copy the model, stream the clips through it and split the chunks into the two sets."""
    import shutil  # noqa: PLC0415

    model_src = ctx.pypi("silero-vad") / _MODEL_FILE
    model_path = ctx.out / "model.onnx"
    shutil.copyfile(model_src, model_path)  # the shipped bytes, unchanged
    sess = _session(model_path)
    clips = _clips(ctx.deb("alsa-utils"))

    # (name, audio, split): independent streams, each starting from zero state and context
    noise = clips[_NOISE][0]
    cut = (len(noise) // _CHUNK // 2) * _CHUNK  # a chunk boundary near the middle
    streams: list[tuple[str, np.ndarray, str]] = [
        *((n, clips[n][0], "calib") for n in _CALIB_SPEECH),
        (f"{_NOISE}[:{cut}]", noise[:cut], "calib"),
        *((n, clips[n][0], "eval") for n in _EVAL_SPEECH),
        (f"{_NOISE}[{cut}:]", noise[cut:], "eval"),
    ]
    n_clips = len(streams)  # the recordings as shipped; variants follow
    # Calibration-only variants: gain -12 … -3 dB and a start shift that moves the chunk
    # boundaries, so calibration sees quieter input and other window alignments.
    rng = ctx.rng("calib-variants")
    for name, audio, split in list(streams):
        if split != "calib":
            continue
        gain_db = float(rng.uniform(-12.0, -3.0))
        shift = int(rng.integers(_CONTEXT, _CHUNK - _CONTEXT))
        variant = (audio[shift:] * np.float32(10.0 ** (gain_db / 20.0))).astype(np.float32)
        streams.append((f"{name}@{gain_db:+.1f}dB,shift{shift}", variant, "calib"))

    sets: dict[str, dict[str, list[np.ndarray]]] = {
        s: {"input": [], "state": []} for s in ("calib", "eval")
    }
    per_stream: dict[str, dict[str, Any]] = {}
    for name, audio, split in streams:
        windows, states, probs = stream(sess, audio)
        sets[split]["input"].append(windows)
        sets[split]["state"].append(states)
        per_stream[name] = {
            "split": split,
            "chunks": len(probs),
            "speech_fraction": round(float(np.mean(probs > _THRESHOLD)), 4),
            "mean_prob": round(float(np.mean(probs)), 4),
        }
    calib = {k: np.concatenate(v) for k, v in sets["calib"].items()}
    evals = {k: np.concatenate(v) for k, v in sets["eval"].items()}

    # The clips' pauses hold digital silence, so all-zero windows occur in both sets. With
    # different incoming states they are different samples, but the harness tells the sets
    # apart by the first input alone, so drop those evaluation chunks (calibration keeps them).
    seen = {w.tobytes() for w in calib["input"]}
    keep = np.array([w.tobytes() not in seen for w in evals["input"]])
    evals = {k: v[keep] for k, v in evals.items()}

    info = {
        "model_file": _MODEL_FILE,
        "audio": f"alsa-utils:{_SOUNDS}/*.wav (48 kHz mono int16)",
        "preprocessing": (
            f"channel mean, float in [-1, 1], Kaiser-windowed sinc resampling to {_RATE} Hz "
            f"({_SINC_ZEROS} zero crossings, beta {_KAISER_BETA}, roll-off {_ROLLOFF}); "
            f"chunks of {_CHUNK} after {_CONTEXT} samples of context, last chunk zero-padded, "
            "state carried by the FP32 model from zero"
        ),
        "calib_clips": [*_CALIB_SPEECH, f"{_NOISE} first {cut} samples", "gain/shift variants"],
        "eval_clips": [*_EVAL_SPEECH, f"{_NOISE} from sample {cut}"],
        "eval_dropped_duplicates": int((~keep).sum()),
        "threshold": _THRESHOLD,
        # acceptance check: FP32 should call the speech clips mostly speech and noise not
        "speech_fraction_per_clip": {
            name: per_stream[name]["speech_fraction"] for name, _, _ in streams[:n_clips]
        },
        "streams": per_stream,
    }
    return Built(
        calib=calib,
        eval=evals,
        labels=None,
        info=info,
        batch_axes={"state": 1, "stateN": 1},
        constants={"sr": np.array(_RATE, dtype=np.int64)},
    )


def evaluate(
    outputs: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    labels: np.ndarray | None,
) -> dict[str, float]:
    """Speech decisions and probabilities against the FP32 reference (there are no labels).

    Returns
    -------
    dict[str, float]
        ``decision_agreement``: fraction of chunks whose decision (probability above 0.5)
        matches FP32; ``prob_mae`` / ``prob_max_err``: mean / largest absolute probability
        error.
    """
    del labels  # unlabelled: FP32 decisions are the reference, not ground truth
    prob = np.asarray(outputs["output"], dtype=np.float64).reshape(-1)
    ref = np.asarray(reference["output"], dtype=np.float64).reshape(-1)
    err = np.abs(prob - ref)
    return {
        METRIC: float(np.mean((prob > _THRESHOLD) == (ref > _THRESHOLD))),
        "prob_mae": float(np.mean(err)),
        "prob_max_err": float(np.max(err)),
    }
