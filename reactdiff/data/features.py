"""Per-frame feature extractors: every stream has one row per video frame (25 fps).

- `mfcc`: 26 MFCCs from torchaudio, one 40 ms window per video frame.
- `Wav2Vec2Features` (AFR): wav2vec 2.0 hidden states at 50 Hz, two per video frame, concatenated.
- `FacialFeatures` (VA, AU, FE): TorchScript predictors applied to every decoded video frame.

Alignment rule shared by all audio streams: row `i` describes the audio of video frame `i`, i.e. the
samples in [i/fps, (i+1)/fps). When the audio yields fewer rows than the clip has frames (a 30.0 s
WAV against a 751-frame video), the last row is repeated, at most `MAX_PAD_FRAMES` frames; a larger
gap means the audio and video do not belong together and raises `FeatureError`. Extra rows are
trimmed. Pretrained weights are only ever loaded from local paths; nothing is downloaded.

The extractors take arrays, so their errors cannot name the source file: callers (`prepare`) catch
`FeatureError` and add the clip's path. `decode_video` and `FacialFeatures` do name the video.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import av
import numpy as np
import torch
import torchaudio
from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

from reactdiff.data.layout import FPS

MODEL_RATE = 16_000  # both MFCC and wav2vec2 run on 16 kHz audio (the paper's setting)
MFCC_DIM = 26
PAPER_FACIAL_DIMS = {"va": 64, "au": 25088, "fe": 1408}  # ELIM, ME-GraphAU, ResMaskNet outputs
MAX_PAD_FRAMES = 5  # 0.2 s: covers the 751-vs-750-frame and receptive-field shortfalls, no more


class FeatureError(ValueError):
    """An input cannot be turned into features (too short, undecodable, wrong model file)."""


def _align_rows(rows: np.ndarray, target: int, max_missing: int, what: str) -> np.ndarray:
    """Trim `rows` to `target` rows, or pad by repeating the last row (at most `max_missing`)."""
    missing = target - len(rows)
    if len(rows) == 0 or missing > max_missing:
        raise FeatureError(
            f"{what}: the audio gives {len(rows)} rows but {target} are needed; at most "
            f"{max_missing} may be padded. Check that the audio belongs to this video and that "
            f"`frames` and `rate` are right"
        )
    if missing <= 0:
        return rows[:target]
    return np.concatenate([rows, np.repeat(rows[-1:], missing, axis=0)])


def to_model_rate(audio: np.ndarray, rate: int) -> torch.Tensor:
    """Mono float32 audio at `rate` → 1-D tensor at 16 kHz.

    A (samples, channels) array is averaged to mono. Callers that run several audio extractors on
    one clip can resample once with this and pass `rate=MODEL_RATE` to each.
    """
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 2:
        audio = audio.mean(axis=1)
    if audio.ndim != 1:
        raise FeatureError(f"audio must be (samples,) or (samples, channels); got {audio.shape}")
    wave = torch.from_numpy(audio)
    if rate == MODEL_RATE:
        return wave
    return torchaudio.functional.resample(wave, orig_freq=rate, new_freq=MODEL_RATE)


def mfcc(audio: np.ndarray, rate: int, frames: int, fps: int = FPS) -> np.ndarray:
    """MFCC stream (frames, 26) float32: 16 kHz, 40 ms window and hop, 26 mel filters, 26 coefficients.

    `center=False` so that row i is computed from exactly the samples of video frame i (the paper's
    "a 1/25-second audio clip at a time"): a 30.0 s clip gives 750 rows. Other settings are
    torchaudio's defaults: Hann window, power spectrum, dB scale floored 80 dB below the clip's
    loudest bin, orthonormal DCT-II (coefficient 0 follows the frame's log energy).
    """
    window = MODEL_RATE // fps  # 640 samples = 40 ms
    wave = to_model_rate(audio, rate)
    if len(wave) < window:
        raise FeatureError(f"mfcc: audio of {len(wave)} samples at 16 kHz is shorter than one frame")
    transform = torchaudio.transforms.MFCC(
        sample_rate=MODEL_RATE,
        n_mfcc=MFCC_DIM,
        melkwargs={"n_fft": window, "win_length": window, "hop_length": window, "n_mels": MFCC_DIM, "center": False},
    )
    rows = transform(wave).T.numpy()  # (n_mfcc, time) → (time, n_mfcc)
    return _align_rows(rows, frames, MAX_PAD_FRAMES, "mfcc").astype(np.float32)


class Wav2Vec2Features:
    """AFR stream: wav2vec 2.0 last hidden states, two per video frame → (frames, 2·hidden).

    `model_dir` is a local folder written by `save_pretrained` (e.g. a copy of
    facebook/wav2vec2-base-960h: hidden 768 → `dim` 1536). Its `preprocessor_config.json`, when
    present, decides the input normalisation; without it the base-960h default is used
    (zero mean, unit variance over the clip).

    The conv front end has a stride of 320 samples at 16 kHz (50 Hz), so hidden states 2i and 2i+1
    cover video frame i. The audio is cut into chunks of `chunk_frames` whole video frames to bound
    memory; each chunk also gets the few samples its last hidden state looks past the chunk end
    (receptive field − stride), so chunks tile the clip without gaps. Chunks are encoded
    independently (attention and the conv front end's GroupNorm see one chunk), so the chunk length
    is part of the feature definition; the default (30 s) holds a whole REACT2024 clip, which is
    then encoded in one pass. Input normalisation is over the used audio, before chunking.
    """

    def __init__(
        self, model_dir: str | Path, device: str | torch.device = "cpu", chunk_frames: int = 750, fps: int = FPS
    ) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise FeatureError(
                f"wav2vec2 model folder {model_dir} has no config.json; expected a folder written "
                f"by save_pretrained (e.g. a local copy of facebook/wav2vec2-base-960h)"
            )
        self.model = Wav2Vec2Model.from_pretrained(model_dir, local_files_only=True).to(device).eval()
        if (model_dir / "preprocessor_config.json").is_file():
            self.processor = Wav2Vec2FeatureExtractor.from_pretrained(model_dir, local_files_only=True)
        else:
            self.processor = Wav2Vec2FeatureExtractor(sampling_rate=MODEL_RATE, do_normalize=True)
        if self.processor.sampling_rate != MODEL_RATE:
            raise FeatureError(
                f"{model_dir}/preprocessor_config.json: sampling_rate is "
                f"{self.processor.sampling_rate}; expected {MODEL_RATE}"
            )
        config = self.model.config
        self.stride = math.prod(config.conv_stride)
        # Receptive field of one hidden state in samples: 400 for the standard conv stack.
        self.receptive_field = 1 + sum(
            (kernel - 1) * math.prod(config.conv_stride[:i]) for i, kernel in enumerate(config.conv_kernel)
        )
        self.frame_samples = MODEL_RATE // fps
        if self.frame_samples % self.stride:
            raise FeatureError(
                f"{model_dir}/config.json: conv stride {self.stride} does not divide the "
                f"{self.frame_samples} samples of one video frame; expected the standard stride 320"
            )
        self.states_per_frame = self.frame_samples // self.stride  # 2 at 25 fps
        self.hidden_size = config.hidden_size
        self.dim = self.states_per_frame * self.hidden_size
        self.device = device
        self.chunk_frames = chunk_frames

    @torch.inference_mode()
    def __call__(self, audio: np.ndarray, rate: int, frames: int) -> np.ndarray:
        tail = self.receptive_field - self.stride
        wave = to_model_rate(audio, rate)[: frames * self.frame_samples + tail].numpy()  # no more needed
        wave = self.processor(wave, sampling_rate=MODEL_RATE, return_tensors="np").input_values[0]
        chunk_samples = self.chunk_frames * self.frame_samples
        states = []
        for start in range(0, len(wave), chunk_samples):
            piece = wave[start : start + chunk_samples + tail]
            if len(piece) < self.receptive_field:
                break  # too short for one more hidden state; padding below covers it
            inputs = torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32)).to(self.device)
            states.append(self.model(inputs[None]).last_hidden_state[0].float().cpu().numpy())
        hidden = np.concatenate(states) if states else np.zeros((0, self.hidden_size), np.float32)
        hidden = _align_rows(hidden, frames * self.states_per_frame, MAX_PAD_FRAMES * self.states_per_frame, "wav2vec2")
        return hidden.reshape(frames, self.dim).astype(np.float32)


def iter_video(path: str | Path, frames: int, size: int | None = None, chunk_frames: int = 32) -> Iterator[np.ndarray]:
    """Decode the first `frames` frames of a video as RGB uint8 chunks of (≤chunk_frames, H, W, 3).

    Frames are resized to `size`×`size` (area interpolation) when `size` is given. Only one chunk
    is held at a time. Raises `FeatureError` naming the file when it is missing, cannot be decoded
    or has fewer than `frames` frames.
    """
    path = Path(path)
    if frames < 1:
        raise FeatureError(f"video {path}: frames must be ≥ 1, got {frames}")
    if not path.is_file():
        raise FeatureError(f"video {path} does not exist")
    decoded = 0
    chunk: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FeatureError(f"video {path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                chunk.append(frame.to_ndarray(format="rgb24", width=size, height=size, interpolation="AREA"))
                decoded += 1
                if len(chunk) == chunk_frames or decoded == frames:
                    yield np.stack(chunk)
                    chunk = []
                if decoded == frames:
                    return
    except av.FFmpegError as exc:
        raise FeatureError(
            f"could not decode video {path} after {decoded} frames: {exc} "
            f"(the file may be truncated or not a video; re-export or re-download it)"
        ) from exc
    raise FeatureError(
        f"video {path} has {decoded} decodable frames; expected at least {frames} (the file may be truncated)"
    )


def decode_video(path: str | Path, frames: int, size: int | None = None) -> np.ndarray:
    """The first `frames` frames of a video as one (frames, H, W, 3) uint8 RGB array."""
    video: np.ndarray | None = None
    filled = 0
    for chunk in iter_video(path, frames, size):
        if video is None:  # allocate once, so the clip is never held twice
            video = np.empty((frames, *chunk.shape[1:]), dtype=np.uint8)
        video[filled : filled + len(chunk)] = chunk
        filled += len(chunk)
    assert video is not None  # iter_video raises unless it yielded `frames` frames
    return video


class FacialFeatures:
    """Facial streams from TorchScript predictors, e.g. `{"va": ..., "au": ..., "fe": ...}`.

    Each file maps a float batch (B, 3, input_size, input_size) of RGB in [0, 1] to (B, dim).
    Normalisation belongs inside the exported module (ImageNet mean/std for the paper's
    predictors), because each network has its own; this class only scales pixels to [0, 1].
    Every predictor is probed once at load time, which checks the file and sets `dims[name]`.
    The video is decoded and predicted in chunks of `chunk_frames` frames, so memory holds one
    chunk of images plus the output arrays (the AU stream alone is 25088 floats per frame).
    """

    def __init__(
        self,
        predictors: Mapping[str, str | Path],
        input_size: int = 224,
        device: str | torch.device = "cpu",
        chunk_frames: int = 32,
    ) -> None:
        self.input_size = input_size
        self.device = device
        self.chunk_frames = chunk_frames
        self.models: dict[str, torch.jit.ScriptModule] = {}
        self.dims: dict[str, int] = {}
        probe = torch.zeros(1, 3, input_size, input_size, device=device)
        for name, path in predictors.items():
            path = Path(path)
            if not path.is_file():
                raise FeatureError(
                    f"facial predictor '{name}': {path} does not exist "
                    f"(expected a TorchScript file saved with torch.jit.save)"
                )
            try:
                model = torch.jit.load(str(path), map_location=device).eval()
                with torch.inference_mode():
                    out = model(probe)
            except Exception as exc:  # any load or probe failure means the file is unusable here
                raise FeatureError(
                    f"facial predictor '{name}': {path} is not a TorchScript module that accepts "
                    f"(1, 3, {input_size}, {input_size}) images in [0, 1]: {exc}"
                ) from exc
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
                shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise FeatureError(
                    f"facial predictor '{name}': {path} returned {shape} for one image; expected a (1, dim) tensor"
                )
            self.models[name] = model
            self.dims[name] = int(out.shape[1])

    @torch.inference_mode()
    def __call__(self, video_path: str | Path, frames: int) -> dict[str, np.ndarray]:
        outputs = {name: np.empty((frames, dim), dtype=np.float32) for name, dim in self.dims.items()}
        filled = 0
        for chunk in iter_video(video_path, frames, self.input_size, self.chunk_frames):
            images = torch.from_numpy(chunk).to(self.device).permute(0, 3, 1, 2).float().div_(255)
            for name, model in self.models.items():
                outputs[name][filled : filled + len(chunk)] = model(images).float().cpu().numpy()
            filled += len(chunk)
        return outputs
