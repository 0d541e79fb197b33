"""Model tests at tiny sizes: shapes and ranges, learning, seeds, online causality, LRS,
checkpoints, window padding and the no-Ray/MLflow guard."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from reactdiff.config import DiffusionConfig, LRSConfig, MMTConfig, ModelConfig
from reactdiff.data.layout import AU_SLICE, EXPR_SLICE, VA_SLICE
from reactdiff.models import (
    LRS,
    MMT,
    CausalCache,
    LatentStatsAccumulator,
    ReactDiff,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LITE = {"3dmm": 58, "emotion": 25, "mfcc": 26}
PAPER_TINY = {"au": 40, "fe": 12, "va": 6, "afr": 16, "mfcc": 26}  # paper roles, tiny widths
WS = 5
TIME_LAYOUT = {"layout": "time", "condition_context": 3, "prediction": "sample"}  # beyond the paper


def tiny_config(**overrides) -> ModelConfig:
    config = ModelConfig(
        mmt=MMTConfig(d_model=32, n_heads=4, latent_dim=8, decoder_layers=1, dropout=0.0),
        diffusion=DiffusionConfig(
            window_size=WS, steps=4, cond_dim=32, unet_channels=[16, 32], time_embed_dim=16, ema_decay=0.9
        ),
    )
    return config.model_copy(update=overrides)


def features(streams: dict[str, int], batch: int, frames: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(batch, frames, dim, generator=generator) for name, dim in streams.items()}


def targets(batch: int, frames: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    threedmm = torch.randn(batch, frames, 58, generator=generator) * 3 + 1
    emotion = torch.rand(batch, frames, 25, generator=generator)
    emotion[..., AU_SLICE] = (emotion[..., AU_SLICE] > 0.5).float()
    emotion[..., VA_SLICE] = emotion[..., VA_SLICE] * 2 - 1
    emotion[..., EXPR_SLICE] = torch.softmax(emotion[..., EXPR_SLICE] * 4, dim=-1)
    return threedmm, emotion


def stage2(streams: dict[str, int], config: ModelConfig | None = None, seed: int = 0) -> ReactDiff:
    """A ReactDiff over a random (untrained) MMT, latent statistics from random clips."""
    torch.manual_seed(seed)
    mmt = MMT(streams, (config or tiny_config()).mmt)
    mmt.set_threedmm_normalisation(torch.full((58,), 1.0), torch.full((58,), 3.0))
    model = ReactDiff.from_stage1(mmt, config or tiny_config()).eval()
    accumulator = LatentStatsAccumulator(mmt.config.latent_dim)
    with torch.no_grad():
        accumulator.update(mmt.encode(features(streams, 4, 30, seed=99)))
    model.set_latent_stats(accumulator.finalize())
    return model


def check_ranges(emotion: torch.Tensor) -> None:
    au, va, expr = emotion[..., AU_SLICE], emotion[..., VA_SLICE], emotion[..., EXPR_SLICE]
    assert au.min() >= 0 and au.max() <= 1
    assert va.min() >= -1 and va.max() <= 1
    assert expr.min() >= 0
    torch.testing.assert_close(expr.sum(-1), torch.ones_like(expr[..., 0]))


# ------------------------------------------------------------------------------ shapes, ranges


@pytest.mark.parametrize("streams", [LITE, PAPER_TINY], ids=["lite", "paper-tiny"])
def test_mmt_shapes_and_ranges(streams):
    mmt = MMT(streams, tiny_config().mmt)
    feats = features(streams, batch=2, frames=23, seed=0)
    latent = mmt.encode(feats)
    assert latent.shape == (2, 23, 8)
    threedmm, emotion = mmt.decode(latent)
    assert threedmm.shape == (2, 23, 58) and emotion.shape == (2, 23, 25)
    check_ranges(emotion)
    loss, parts = mmt.loss(feats, *targets(2, 23, seed=1))
    assert loss.ndim == 0 and set(parts) == {"mse_3dmm", "l1_emotion"}
    torch.testing.assert_close(loss.detach(), 10 * parts["mse_3dmm"] + 10 * parts["l1_emotion"])


def test_mmt_returns_raw_3dmm_from_its_normalisation():
    mmt = MMT(LITE, tiny_config().mmt)
    latent = mmt.encode(features(LITE, 1, 10, seed=0))
    normalised, _ = mmt.decode_normalised(latent)
    mmt.set_threedmm_normalisation(torch.arange(58.0), torch.full((58,), 2.0))
    raw, _ = mmt.decode(latent)
    torch.testing.assert_close(raw, normalised * 2 + torch.arange(58.0))


def test_mmt_rejects_unknown_and_missing_streams():
    with pytest.raises(ValueError, match="no role"):
        MMT({"pitch": 3}, tiny_config().mmt)
    mmt = MMT(LITE, tiny_config().mmt)
    with pytest.raises(KeyError, match="missing stream 'mfcc'"):
        mmt.encode({"3dmm": torch.zeros(1, 5, 58), "emotion": torch.zeros(1, 5, 25)})
    with pytest.raises(ValueError, match="'emotion': expected a \\(batch, 5 frames, 25\\)"):
        mmt.encode({"3dmm": torch.zeros(1, 5, 58), "emotion": torch.zeros(1, 6, 25), "mfcc": torch.zeros(1, 5, 26)})


@pytest.mark.parametrize("streams", [LITE, PAPER_TINY], ids=["lite", "paper-tiny"])
def test_generate_shapes_and_ranges(streams):
    model = stage2(streams, tiny_config(binarise_au=True))
    out = model.generate(features(streams, 2, 20, seed=1), alpha=3, seed=0)
    assert out["3dmm"].shape == (2, 3, 20, 58)
    assert out["emotion"].shape == (2, 3, 20, 25)
    assert out["latent"].shape == (2, 3, 20, 8)
    check_ranges(out["emotion"])
    assert set(out["emotion"][..., AU_SLICE].unique().tolist()) <= {0.0, 1.0}


def test_latent_stats_accumulator_merges_and_maps_to_unit_box():
    latents = torch.randn(6, 10, 8) * 5 + 2
    whole = LatentStatsAccumulator(8)
    whole.update(latents)
    first, second = LatentStatsAccumulator(8), LatentStatsAccumulator(8)
    first.update(latents[:2])
    second.update(latents[2:])
    first.merge(second)
    assert first.count == whole.count == 60
    stats = first.finalize()
    torch.testing.assert_close(stats.low, whole.finalize().low)
    normalised = (latents - stats.center) / stats.half_range
    assert normalised.min() >= -1 - 1e-6 and normalised.max() <= 1 + 1e-6
    torch.testing.assert_close(normalised.amin(dim=(0, 1)), -torch.ones(8))


# ------------------------------------------------------------------------------ learning


def test_stage1_overfits_one_batch():
    torch.manual_seed(0)
    mmt = MMT(LITE, tiny_config().mmt)
    mmt.set_threedmm_normalisation(torch.full((58,), 1.0), torch.full((58,), 3.0))  # the targets'
    feats = features(LITE, 2, 20, seed=0)
    threedmm, emotion = targets(2, 20, seed=1)
    optimiser = torch.optim.AdamW(mmt.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        loss, _ = mmt(feats, threedmm, emotion)
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    assert loss.item() < first / 10, (first, loss.item())


def test_stage2_overfits_one_batch_with_fixed_noise():
    # Fixed timesteps and noise (a freshly seeded generator each step) make ε a deterministic
    # target, so a working network and loss must drive the L1 down by 10×.
    model = stage2(LITE).train()
    speaker, listener = features(LITE, 2, 20, seed=1), features(LITE, 2, 20, seed=2)
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss, parts = model(speaker, listener, generator=torch.Generator().manual_seed(0))
        first = first if first is not None else loss.item()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        model.update_ema()
    assert loss.item() < first / 10, (first, loss.item())
    assert all(not p.requires_grad for p in model.mmt.parameters())
    assert not model.mmt.training  # frozen MMT stays in eval mode while the denoiser trains
    # the EMA moved away from its initial copy toward the trained denoiser
    ema, trained = model.ema.module.output[-1].weight, model.denoiser.output[-1].weight
    assert int(model.ema.n_averaged) == 200
    torch.testing.assert_close(ema, trained, atol=0.05, rtol=0.0)


def test_classifier_free_guidance_scale():
    diffusion = tiny_config().diffusion
    speakers = [features(LITE, 1, 20, seed=s) for s in (1, 2)]

    def sample(scale: float, speaker) -> torch.Tensor:
        config = tiny_config(
            diffusion=DiffusionConfig.model_validate(
                {**diffusion.model_dump(), "guidance_scale": scale, "condition_dropout": 0.1}
            )
        )
        return stage2(LITE, config).generate(speaker, alpha=2, seed=0)["latent"]

    # w = 0 is the unconditional model: the speaker no longer matters
    torch.testing.assert_close(sample(0.0, speakers[0]), sample(0.0, speakers[1]))
    assert not torch.allclose(sample(1.0, speakers[0]), sample(1.0, speakers[1]))
    # w = 1 is plain conditional sampling; w = 2 extrapolates away from it
    plain = stage2(LITE).generate(speakers[0], alpha=2, seed=0)["latent"]
    torch.testing.assert_close(sample(1.0, speakers[0]), plain)
    assert not torch.allclose(sample(2.0, speakers[0]), plain)


def test_sampling_from_embedded_conditions_equals_sampling_from_windows():
    """Generation embeds each speaker window once (z_bc) for all steps; with guidance the null
    condition is the embedded zero window, so both equal sampling from the raw windows."""
    config = tiny_config(
        diffusion=DiffusionConfig.model_validate(
            {**tiny_config().diffusion.model_dump(), "guidance_scale": 2.0, "condition_dropout": 0.1}
        )
    )
    model = stage2(LITE, config)
    generator = torch.Generator().manual_seed(0)
    windows, noise = (torch.randn(6, WS, 8, generator=generator) for _ in range(2))
    denoiser = model.ema.module
    with torch.no_grad():
        from_windows = model.diffusion.sample(denoiser, windows, noise)
        embedded = model.diffusion.sample(
            denoiser,
            denoiser.embed_condition(windows),
            noise,
            null_condition=denoiser.embed_condition(torch.zeros_like(windows)),
        )
    torch.testing.assert_close(embedded, from_windows, atol=1e-5, rtol=1e-5)


def test_condition_dropout_zeroes_whole_conditions_at_its_rate():
    from reactdiff.models.diffusion import LatentDiffusion

    seen = []

    def net(x, timesteps, condition):
        seen.append(condition)
        return torch.zeros_like(x)

    condition = torch.ones(4000, 5, 8)
    LatentDiffusion(4, condition_dropout=0.25).training_loss(
        net, torch.zeros(4000, 5, 8), condition, torch.Generator().manual_seed(0)
    )
    kept = seen[0].flatten(1)
    assert set(kept.sum(1).unique().tolist()) == {0.0, 40.0}  # whole windows, never parts
    assert abs((kept.sum(1) == 0).float().mean().item() - 0.25) < 0.03


def test_ema_decay_warms_up_from_the_first_updates():
    # With a fixed 0.999 a short run would sample from weights ~all initialisation; the warm-up
    # decay min(0.999, (1 + n) / (10 + n)) lets the first updates move the average a lot.
    model = stage2(LITE, tiny_config(diffusion=tiny_config().diffusion.model_copy(update={"ema_decay": 0.999})))
    weight = model.denoiser.output[-1].weight
    model.update_ema()  # the first update copies the weights
    torch.testing.assert_close(model.ema.module.output[-1].weight, weight)
    before = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    model.update_ema()  # n = 1: decay 2/11, so the average moves 9/11 of the way
    torch.testing.assert_close(model.ema.module.output[-1].weight, before + 9 / 11)
    model.ema.n_averaged.fill_(20_000)  # late in a long run the configured decay applies
    average = model.ema.module.output[-1].weight.detach().clone()
    model.update_ema()
    torch.testing.assert_close(model.ema.module.output[-1].weight, average + 0.001 * (weight - average))


def test_latent_noise_regularises_training_only():
    torch.manual_seed(0)
    config = tiny_config().mmt.model_copy(update={"latent_noise": 0.5})
    mmt = MMT(LITE, config)
    feats = features(LITE, 2, 20, seed=0)
    threedmm, emotion = targets(2, 20, seed=1)
    noisy = [mmt.train()(feats, threedmm, emotion)[0].item() for _ in range(2)]
    assert noisy[0] != noisy[1]  # a fresh draw of latent noise per step
    clean = [mmt.eval()(feats, threedmm, emotion)[0].item() for _ in range(2)]
    assert clean[0] == clean[1]


# ------------------------------------------------------------------------------ sampling


def test_same_seed_same_samples_different_seed_different_samples():
    model = stage2(LITE)
    speaker = features(LITE, 1, 20, seed=1)
    a = model.generate(speaker, alpha=4, seed=7)["emotion"]
    b = model.generate(speaker, alpha=4, seed=7)["emotion"]
    c = model.generate(speaker, alpha=4, seed=8)["emotion"]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # the α samples of one pass are distinct draws
    assert not torch.allclose(a[:, 0], a[:, 1])


def test_bf16_sampling_stays_close_to_fp32_and_returns_fp32():
    """Scoring during training may run the denoiser under bf16 autocast; encode, decode and the
    DDIM steps stay float32, so outputs are float32 and near the fp32 samples."""
    diffusion = {**tiny_config().diffusion.model_dump(), "guidance_scale": 2.0, "condition_dropout": 0.1}
    model = stage2(LITE, tiny_config(diffusion=DiffusionConfig.model_validate(diffusion)))
    speaker = features(LITE, 2, 20, seed=1)
    (exact,) = model.generate_in_styles(speaker, [None], alpha=3, seed=7)
    (fast,) = model.generate_in_styles(speaker, [None], alpha=3, seed=7, bf16_sampling=True)
    for key in ("emotion", "3dmm", "latent"):
        assert fast[key].dtype == torch.float32
    assert not torch.equal(fast["latent"], exact["latent"])  # bf16 really ran
    assert (fast["emotion"] - exact["emotion"]).abs().mean() < 0.02
    # The decoder in bf16 too: the same latent, decoded outputs float32 and near fp32's.
    (decoded,) = model.generate_in_styles(speaker, [None], alpha=3, seed=7, bf16_sampling=True, bf16_decoding=True)
    assert torch.equal(decoded["latent"], fast["latent"])
    for key in ("emotion", "3dmm"):
        assert decoded[key].dtype == torch.float32 and not torch.equal(decoded[key], fast[key])
        assert (decoded[key] - fast[key]).abs().mean() < 0.02


@pytest.mark.parametrize("diffusion", [{}, TIME_LAYOUT], ids=["paper", "time-layout-context"])
def test_online_is_causal_and_offline_is_not(diffusion):
    model = stage2(PAPER_TINY, tiny_config(diffusion=tiny_config().diffusion.model_copy(update=diffusion)))
    speaker = features(PAPER_TINY, 1, 20, seed=1)  # 4 windows of 5 frames
    changed = {name: x.clone() for name, x in speaker.items()}
    for x in changed.values():
        x[:, 2 * WS :] += 3.0  # perturb speaker windows 2 and 3
    online = model.generate(speaker, alpha=2, mode="online", seed=0)
    online_changed = model.generate(changed, alpha=2, mode="online", seed=0)
    # Listener window t sees speaker windows < t: windows 0..2 (frames < 15) cannot change.
    for key in ("3dmm", "emotion", "latent"):
        torch.testing.assert_close(
            online[key][:, :, : 3 * WS], online_changed[key][:, :, : 3 * WS], atol=1e-6, rtol=0.0
        )
    # ... while the model does react to the speaker: the last online window and, offline, the
    # first window (the encoder and the condition see the whole clip) move clearly.
    last = (online["emotion"] - online_changed["emotion"])[:, :, 3 * WS :]
    assert last.abs().max() > 1e-2
    offline = model.generate(speaker, alpha=2, mode="offline", seed=0)
    offline_changed = model.generate(changed, alpha=2, mode="offline", seed=0)
    assert (offline["emotion"] - offline_changed["emotion"])[:, :, :WS].abs().max() > 1e-2


def test_condition_windows_carry_the_speaker_context_before_each_window():
    diffusion = tiny_config().diffusion.model_copy(update={"condition_context": 3})
    model = stage2(LITE, tiny_config(diffusion=diffusion))
    latent = torch.arange(1.0, 21.0).view(1, 20, 1).expand(1, 20, 8)  # frame f holds f + 1
    offline = model._condition_windows(latent, "offline")[0, :, :, 0]
    online = model._condition_windows(latent, "online")[0, :, :, 0]
    assert offline.shape == online.shape == (4, 3 + WS)
    # Offline window t: speaker frames t*5 - 3 ... t*5 + 4; online: one window earlier; zeros before the clip.
    assert offline[1].tolist() == [3, 4, 5, 6, 7, 8, 9, 10] and offline[0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5]
    assert online[2].tolist() == offline[1].tolist() and online[0].abs().sum() == 0
    assert online[1].tolist() == [0, 0, 0, 1, 2, 3, 4, 5]


def test_online_training_condition_never_sees_the_last_speaker_window():
    speaker, listener = features(LITE, 2, 20, seed=1), features(LITE, 2, 20, seed=2)
    changed = {name: x.clone() for name, x in speaker.items()}
    for x in changed.values():
        x[:, 3 * WS :] -= 2.0  # the last of 4 windows: online, no listener window is conditioned on it
    losses = {}
    for train_mode in ("online", "offline"):
        diffusion = tiny_config().diffusion.model_copy(update={"train_mode": train_mode})
        model = stage2(LITE, tiny_config(diffusion=diffusion))
        losses[train_mode] = [
            model.diffusion_loss(s, listener, generator=torch.Generator().manual_seed(0))[0] for s in (speaker, changed)
        ]
    torch.testing.assert_close(losses["online"][0], losses["online"][1], atol=1e-6, rtol=0.0)
    assert (losses["offline"][0] - losses["offline"][1]).abs() > 1e-4


@pytest.mark.parametrize(
    "streams, diffusion",
    [(LITE, {}), (PAPER_TINY, {}), (LITE, TIME_LAYOUT)],
    ids=["lite", "paper-tiny", "lite-time-layout-context"],
)
def test_streaming_online_matches_batched_online(streams, diffusion):
    model = stage2(
        streams,
        tiny_config(
            mmt=tiny_config().mmt.model_copy(update={"decoder_layers": 2}),
            diffusion=tiny_config().diffusion.model_copy(update=diffusion),
        ),
    )
    speaker = features(streams, 2, 23, seed=3)  # 5 windows, the last padded
    batched = model.generate(speaker, alpha=2, mode="online", seed=5)
    windows = list(model.generate_online(speaker, alpha=2, seed=5))
    assert [w["3dmm"].shape[2] for w in windows] == [5, 5, 5, 5, 3]
    # The stream API by hand: window 0 from nothing, then listener window t from speaker window t-1.
    stream = model.open_stream(batch=2, alpha=2, seed=5)
    by_hand = [stream.step(None)] + [
        stream.step({name: x[:, (t - 1) * WS : t * WS] for name, x in speaker.items()}, frames=3 if t == 4 else None)
        for t in range(1, 5)
    ]
    assert stream.windows_done == 5
    # Same noise and conditions (equal to ~1e-7); the batch shapes differ, and DDIM's first x0
    # estimate divides by sqrt(alpha_bar_T) (tiny at T = 4), which magnifies float rounding.
    for key in ("3dmm", "emotion", "latent"):
        streamed = torch.cat([w[key] for w in windows], dim=2)
        torch.testing.assert_close(streamed, batched[key], atol=2e-3, rtol=0.0)
        torch.testing.assert_close(torch.cat([w[key] for w in by_hand], dim=2), streamed, atol=0.0, rtol=0.0)


@pytest.mark.parametrize("streams", [LITE, PAPER_TINY], ids=["lite", "paper-tiny"])
def test_cached_block_by_block_equals_the_masked_whole_clip(streams):
    model = stage2(streams, tiny_config(mmt=tiny_config().mmt.model_copy(update={"decoder_layers": 2})))
    clip = features(streams, 2, 4 * WS, seed=4)
    latent = torch.randn(2, 4 * WS, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        encoded, decoded = model.mmt.encode(clip, WS), model.mmt.decode(latent, WS)
        encoder_cache, decoder_cache = CausalCache(), CausalCache()
        blocks = [slice(t * WS, (t + 1) * WS) for t in range(4)]
        encoded_blocks = [model.mmt.encode({k: x[:, b] for k, x in clip.items()}, cache=encoder_cache) for b in blocks]
        decoded_blocks = [model.mmt.decode(latent[:, b], cache=decoder_cache) for b in blocks]
    assert encoder_cache.frames == decoder_cache.frames == 4 * WS
    torch.testing.assert_close(torch.cat(encoded_blocks, dim=1), encoded, atol=1e-5, rtol=1e-5)
    for i in range(2):  # 3DMM, emotion
        torch.testing.assert_close(torch.cat([d[i] for d in decoded_blocks], dim=1), decoded[i], atol=1e-5, rtol=1e-5)


def test_stream_work_per_window_does_not_grow():
    """Rows (frames × batch) through the MMT's linear layers per window: the encoder and the
    decoder run the new window only, however long the stream. (Without the caches, window t
    would re-run t windows.)"""
    model = stage2(PAPER_TINY)
    rows = {"encoder": 0, "decoder": 0}

    def count(part: str):
        def hook(module: torch.nn.Linear, inputs: tuple[torch.Tensor], _output) -> None:
            rows[part] += inputs[0].numel() // module.in_features

        return hook

    for name, module in model.mmt.named_modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_hook(count("decoder" if name.startswith(("decoder", "head_")) else "encoder"))
    speaker = features(PAPER_TINY, 1, 8 * WS, seed=6)
    stream = model.open_stream(batch=1, alpha=3, seed=0)
    per_window = []
    for t in range(8):
        rows.update(encoder=0, decoder=0)
        stream.step(None if t == 0 else {k: x[:, (t - 1) * WS : t * WS] for k, x in speaker.items()})
        per_window.append(dict(rows))
    assert per_window[0]["encoder"] == 0  # window 0 is conditioned on no speaker frames
    assert per_window[1]["encoder"] > 0 and per_window[1]["decoder"] > 0
    assert all(work == per_window[1] for work in per_window[1:]), per_window
    assert per_window[0]["decoder"] == per_window[1]["decoder"]


def test_stream_refuses_bad_input_with_what_it_expected():
    model = stage2(LITE)
    window = features(LITE, 1, WS, seed=7)
    stream = model.open_stream(batch=1, alpha=2, seed=0)
    with pytest.raises(ValueError, match=r"call step\(None\) first"):
        stream.step(window)
    stream.step(None)
    with pytest.raises(ValueError, match="needs speaker window 0; got None"):
        stream.step(None)
    with pytest.raises(ValueError, match=r"unknown \['afr'\] and missing \['mfcc'\]"):
        stream.step({**{k: v for k, v in window.items() if k != "mfcc"}, "afr": window["mfcc"]})
    with pytest.raises(ValueError, match=r"'mfcc': expected shape \(1, 5, 26\).*got \(1, 3, 26\); a clip's short"):
        stream.step({**window, "mfcc": window["mfcc"][:, :3]})
    with pytest.raises(ValueError, match=r"'emotion': expected shape \(1, 5, 25\).*got \(1, 5, 24\)$"):
        stream.step({**window, "emotion": window["emotion"][..., :24]})
    nan = window["3dmm"].clone()
    nan[0, 2, 7] = float("nan")
    with pytest.raises(ValueError, match="'3dmm': NaN or infinite"):
        stream.step({**window, "3dmm": nan})
    with pytest.raises(ValueError, match="frames: expected 1 … window_size=5 listener frames, got 6"):
        stream.step(window, frames=6)
    assert stream.windows_done == 1  # refused steps leave the stream where it was
    assert stream.step(window)["emotion"].shape == (1, 2, WS, 25)
    with pytest.raises(ValueError, match="alpha >= 1"):
        model.open_stream(alpha=0)


def test_window_padding_replicate_and_drop():
    speaker = features(LITE, 1, 23, seed=1)  # 23 frames, ws 5
    out = stage2(LITE).generate(speaker, alpha=2, seed=0)
    assert out["emotion"].shape == (1, 2, 23, 25)
    refusing = stage2(LITE, tiny_config(diffusion=tiny_config().diffusion.model_copy(update={"pad_mode": "drop"})))
    with pytest.raises(ValueError, match="window_size=5.*pad_mode='drop'"):
        refusing.generate(speaker, alpha=2, seed=0)
    with pytest.raises(ValueError, match="not a multiple"):
        refusing.diffusion_loss(speaker, speaker)


# ------------------------------------------------------------------------------ LRS


def latents_around(center: float, clips: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [center + 0.1 * torch.randn(20, 8, generator=generator) for _ in range(clips)]


def test_lrs_shrinkage_and_inverse():
    lrs = LRS(LRSConfig(mode="mean+scale", reference_clips=4, shrinkage=4.0))
    by_listener = {
        "NoXI/001/Expert_video": latents_around(0.5, 2, 0),
        "NoXI/001/Novice_video": latents_around(-0.5, 6, 1),
    }
    lrs.fit(by_listener)
    all_frames = torch.cat([z for clips in by_listener.values() for z in clips])
    torch.testing.assert_close(lrs.global_style.mean, all_frames.mean(0))
    own_mean = torch.cat(by_listener["NoXI/001/Expert_video"]).mean(0)
    # n = 2 clips, k = 4: style = (2·own + 4·global) / 6
    torch.testing.assert_close(lrs.styles["NoXI/001/Expert_video"].mean, (2 * own_mean + 4 * lrs.global_style.mean) / 6)
    # reference_clips caps n at 4 for the listener with 6 clips
    own4 = torch.cat(by_listener["NoXI/001/Novice_video"][:4]).mean(0)
    torch.testing.assert_close(lrs.styles["NoXI/001/Novice_video"].mean, (4 * own4 + 4 * lrs.global_style.mean) / 8)
    styles = lrs.styles_for(["NoXI/001/Expert_video", "unknown"])
    torch.testing.assert_close(styles.mean[1], lrs.global_style.mean)
    z = torch.randn(2, 3, 5, 8)
    torch.testing.assert_close(lrs.unstandardise(lrs.standardise(z, styles), styles), z)
    assert lrs.estimate_style([]) is lrs.global_style


def test_lrs_leave_one_out_styles_never_use_the_scored_clip():
    lrs = LRS(LRSConfig(mode="mean", reference_clips=4, shrinkage=1.0))
    lrs.fit({"train/person": latents_around(0.0, 3, 0)})
    clips = latents_around(0.4, 3, 1) + latents_around(-0.4, 1, 2)
    ids = ["test/a", "test/a", "test/a", "test/b"]
    styles = lrs.leave_one_out_styles(torch.stack(clips), ids)
    torch.testing.assert_close(styles.mean[0], lrs.estimate_style([clips[1], clips[2]]).mean)
    torch.testing.assert_close(styles.mean[2], lrs.estimate_style([clips[0], clips[1]]).mean)
    torch.testing.assert_close(styles.mean[3], lrs.global_style.mean)  # no other clip of b
    torch.testing.assert_close(styles.rows(1, 3).mean, styles.mean[1:3])


def test_lrs_reference_style_shifts_generated_reactions():
    model = stage2(LITE, tiny_config(lrs=LRSConfig(mode="mean", reference_clips=4, shrinkage=4.0)))
    model.lrs.fit({"a": latents_around(0.0, 4, 0), "b": latents_around(0.2, 4, 1)})
    references = latents_around(0.1, 4, seed=2)
    shift = 0.3
    style = model.lrs.estimate_style(references)
    shifted = model.lrs.estimate_style([z + shift for z in references])
    speaker = features(LITE, 1, 20, seed=1)
    base = model.generate(speaker, alpha=3, listener_style=style, seed=0)
    moved = model.generate(speaker, alpha=3, listener_style=shifted, seed=0)
    # mean mode moves every generated latent frame by n/(n+k)·shift = 0.15 in each dimension
    difference = moved["latent"] - base["latent"]
    torch.testing.assert_close(difference, torch.full_like(difference, shift * 4 / 8), atol=1e-5, rtol=0.0)
    assert not torch.allclose(moved["3dmm"], base["3dmm"])
    # One DDIM pass serves several styles with the same values as one generate() per style.
    in_styles = model.generate_in_styles(speaker, [None, style, shifted], alpha=3, seed=0)
    for expected, got in zip([model.generate(speaker, alpha=3, seed=0), base, moved], in_styles, strict=True):
        for key in ("3dmm", "emotion", "latent"):
            torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=0.0)


# ------------------------------------------------------------------------------ checkpoints


def test_checkpoint_round_trip_both_stages(tmp_path: Path, monkeypatch):
    model = stage2(PAPER_TINY)
    model.lrs.fit({"RECOLA/group-1/P25": latents_around(0.1, 3, 0)})
    speaker = features(PAPER_TINY, 1, 20, seed=1)
    style = model.lrs.styles["RECOLA/group-1/P25"]
    expected = model.generate(speaker, alpha=2, listener_style=style, seed=3)
    with torch.no_grad():  # the raw denoiser now differs from its EMA, which generation uses
        for p in model.denoiser.parameters():
            p.add_(0.05)
    assert torch.equal(model.generate(speaker, alpha=2, listener_style=style, seed=3)["3dmm"], expected["3dmm"])

    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    stage1_path = save_checkpoint(tmp_path / "mmt.pt", model.mmt, extra={"epoch": 3})
    stage2_path = save_checkpoint(tmp_path / "reactdiff.pt", model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mmt.pt", "reactdiff.pt"]  # no temp left

    loaded = load_checkpoint(stage2_path)
    assert isinstance(loaded, ReactDiff)
    got = loaded.generate(speaker, alpha=2, listener_style=loaded.lrs.styles["RECOLA/group-1/P25"], seed=3)
    for key in expected:
        assert torch.equal(got[key], expected[key]), key

    mmt = load_checkpoint(stage1_path)
    assert isinstance(mmt, MMT) and read_checkpoint(stage1_path)["extra"] == {"epoch": 3}
    assert torch.equal(mmt.encode(speaker), model.mmt.encode(speaker))
    assert calls and all(flag is True for flag in calls)

    rebuilt = ReactDiff.from_stage1(mmt, tiny_config())  # stage 2 starts from a stage-1 file
    assert torch.equal(rebuilt.mmt.threedmm_std, model.mmt.threedmm_std)
    # The latent statistics and LRS styles are model state: in `weights`, nowhere else.
    assert bool(rebuilt.latent_stats_set) and torch.equal(rebuilt.latent_center, model.latent_center)
    torch.testing.assert_close(rebuilt.encode_latent(speaker), model.encode_latent(speaker))
    payload = read_checkpoint(stage2_path)
    assert payload["extra"] == {} and set(payload) == {
        "format",
        "version",
        "stage",
        "config",
        "streams",
        "weights",
        "extra",
    }
    assert "lrs._extra_state" in payload["weights"] and "mmt.latent_center" in payload["weights"]


def test_load_checkpoint_rejects_foreign_files(tmp_path: Path):
    path = tmp_path / "other.pt"
    torch.save({"weights": {}}, path)
    with pytest.raises(ValueError, match="not a reactdiff checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------ guard


def test_models_import_neither_ray_nor_mlflow():
    code = (
        "import sys, reactdiff.models; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'mlflow')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    sources = Path(__file__).parents[1] / "reactdiff" / "models"
    for source in sources.glob("*.py"):
        text = source.read_text()
        assert "import ray" not in text and "import mlflow" not in text, source


def test_loss_over_cached_latents_equals_the_loss_over_features():
    """Stage 2 over latents encoded once gives the same loss, seed for seed, as encoding the
    features at the step (whole clips: crops differ by design, see LatentBatches)."""
    model = stage2(LITE).train()
    speaker, listener = features(LITE, 3, 20, seed=1), features(LITE, 3, 20, seed=2)
    on_the_fly, _ = model(speaker, listener, None, torch.Generator().manual_seed(5))
    latents = model.training_latents(speaker, listener)
    torch.testing.assert_close(latents[1], model.encode_latent(listener))
    cached, _ = model(*latents, None, torch.Generator().manual_seed(5))
    torch.testing.assert_close(cached, on_the_fly)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_each_prediction_target_is_what_the_loss_compares(prediction):
    from reactdiff.models.diffusion import LatentDiffusion

    diffusion = LatentDiffusion(10, prediction=prediction)
    x0 = torch.rand(64, 5, 8) * 2 - 1
    generator = torch.Generator().manual_seed(0)
    timesteps = torch.randint(0, 10, (64,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    noisy = diffusion.scheduler.add_noise(x0, noise, timesteps)
    alpha_bar = diffusion.scheduler.alphas_cumprod[timesteps].view(-1, 1, 1)
    exact = {  # the quantity a perfect network of each kind outputs, from x_t and the truth
        "epsilon": noise,
        "sample": x0,
        "v_prediction": alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0,
    }[prediction]
    oracle_loss = diffusion.training_loss(lambda x, t, c: exact, x0, None, torch.Generator().manual_seed(0))
    assert oracle_loss.item() < 1e-6
    torch.testing.assert_close(noisy, alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise)


def test_the_conditioning_path_learns_a_toy_coupling():
    """x0 = f(condition) for the condition's first half of latent dims (a one-frame lag and a gain);
    its second half is unrelated. After a few hundred steps, DDIM samples follow f(condition)
    and do not move when only the unrelated half changes."""
    from reactdiff.models.denoiser import Denoiser
    from reactdiff.models.diffusion import LatentDiffusion

    torch.manual_seed(0)
    # The demo's choices (configs/demo.yaml, docs/quality.md); with the paper's ε-prediction and
    # layout the same 300 steps reach a correlation of only ~0.15.
    config = tiny_config().diffusion.model_copy(
        update={"prediction": "sample", "layout": "time", "condition_norm": "none"}
    )
    net = Denoiser(8, config)
    diffusion = LatentDiffusion(config.steps, prediction=config.prediction)
    generator = torch.Generator().manual_seed(0)

    def draw(n: int) -> torch.Tensor:
        return torch.rand(n, WS, 8, generator=generator) * 2 - 1

    def f(condition: torch.Tensor) -> torch.Tensor:
        related = torch.roll(condition[..., :4], 1, dims=1) * 0.8
        return torch.cat([related, torch.zeros_like(related)], dim=-1)

    optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(300):
        condition = draw(64)
        loss = diffusion.training_loss(net, f(condition), condition, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    net.eval()
    condition, noise = draw(256), torch.randn(256, WS, 8, generator=generator)
    sampled = diffusion.sample(net, condition, noise)
    target = f(condition)[..., :4].flatten()
    assert torch.corrcoef(torch.stack([sampled[..., :4].flatten(), target]))[0, 1] >= 0.8
    unrelated = torch.cat([condition[..., :4], draw(256)[..., 4:]], dim=-1)
    moved = diffusion.sample(net, unrelated, noise)
    assert (moved - sampled).abs().mean() < 0.25 * (sampled[..., :4] - target.view(256, WS, 4)).abs().mean() + 0.05
