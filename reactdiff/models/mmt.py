"""Stage 1: the Multi-Modality Transformer (MMT) autoencoder (paper §3.3).

A person's per-frame features → per-frame latent → that person's 3DMM (58) and emotion (25).

Encoder: every stream is projected to `d_model`; within each modality the query stream attends
its other streams (intra-modal cross attention, one block per context stream); the facial result
attends the audio result (inter-modal cross attention); an MLP maps both to the latent.
Decoder: Transformer encoder layers over the whole clip and two linear heads.

All attention runs over time. `causal_block=k` restricts every attention to frames of the same or
earlier blocks of k frames, so frame t depends only on frames < (t // k + 1) * k: online
generation uses k = window size, and encoding a prefix gives the same values as encoding the
whole clip with that mask. Under that mask the keys and values of finished blocks never change, so
a `CausalCache` lets `encode`/`decode` take a clip one block at a time, each block costing the
same whatever its index (online streaming).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from torch import Tensor, nn

from reactdiff.config import MMTConfig
from reactdiff.data.layout import AU_SLICE, EMOTION_DIM, EXPR_SLICE, FACE3D_DIM, VA_SLICE

# Stream roles. Per modality, the first present stream of the order is the query of the
# intra-modal cross attention and the other present streams are its context; a stream alone
# attends itself. Paper profile: au ← fe, va; afr ← mfcc. Lite profile: 3dmm ← emotion; mfcc.
FACIAL_QUERY_ORDER = ("au", "3dmm", "fe", "va", "emotion")
AUDIO_QUERY_ORDER = ("afr", "mfcc")


def block_causal_mask(frames: int, block: int, device: torch.device) -> Tensor:
    """Boolean (frames, frames) attention mask, True = may not attend: frame i sees frame j
    only when j's block of `block` frames is not after i's."""
    blocks = torch.arange(frames, device=device) // block
    return blocks[None, :] > blocks[:, None]


def positional_encoding(frames: int, dim: int, device: torch.device, offset: int = 0) -> Tensor:
    """Sinusoidal encoding of frames offset … offset + frames − 1 (the same function as the
    diffusion time embedding)."""
    return get_timestep_embedding(torch.arange(offset, offset + frames, device=device), dim)


class CausalCache:
    """Block-by-block inference state: how many frames were encoded (or decoded) so far, and per
    attention layer the keys and values (B, heads, frames, head_dim) of those frames.

    Pass the same cache to consecutive `MMT.encode` (or `MMT.decode`) calls, each with the next
    block of frames: each block attends every earlier frame and itself, which is the block-causal
    mask, so the values equal one masked call over the whole clip while a block's cost does not
    grow with its index (only its attention's key length does). One cache per direction and clip:
    an encoder cache and a decoder cache have different layers and batches.
    """

    def __init__(self):
        self.frames = 0
        self._keys: dict[nn.Module, Tensor] = {}
        self._values: dict[nn.Module, Tensor] = {}

    def extend(self, layer: nn.Module, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Append a block's keys/values for the attention `layer`; return all of its so far."""
        if layer in self._keys:
            keys = torch.cat([self._keys[layer], keys], dim=2)
            values = torch.cat([self._values[layer], values], dim=2)
        self._keys[layer], self._values[layer] = keys, values
        return keys, values


def attention(
    attn: nn.MultiheadAttention,
    query: Tensor,
    context: Tensor,
    mask: Tensor | None = None,
    cache: CausalCache | None = None,
) -> Tensor:
    """`attn(query, context, context, attn_mask=mask)` with `attn`'s weights as one fused
    `F.scaled_dot_product_attention` (torch's inference fast path for Transformer layers computes
    attention with unfused batched matmuls instead). query (B, Lq, d), context (B, Lc, d), mask
    (Lq, Lc) True = may not attend. With `cache`, the context frames the cache holds for `attn`
    come before `context` (no mask: every query sees them all)."""
    heads = attn.num_heads
    w_query, w_key, w_value = attn.in_proj_weight.chunk(3)
    b_query, b_key, b_value = attn.in_proj_bias.chunk(3)

    def split_heads(x: Tensor) -> Tensor:  # (B, L, d) -> (B, heads, L, d / heads)
        return x.unflatten(-1, (heads, -1)).transpose(1, 2)

    keys, values = split_heads(F.linear(context, w_key, b_key)), split_heads(F.linear(context, w_value, b_value))
    if cache is not None:
        keys, values = cache.extend(attn, keys, values)
    attended = F.scaled_dot_product_attention(
        split_heads(F.linear(query, w_query, b_query)),
        keys,
        values,
        attn_mask=None if mask is None else ~mask,
        dropout_p=attn.dropout if attn.training else 0.0,
    )
    return attn.out_proj(attended.transpose(1, 2).flatten(2))


def activate_emotion(raw: Tensor) -> Tensor:
    """Map raw emotion logits to the REACT2024 ranges: AU in [0, 1] (sigmoid), valence/arousal in
    [-1, 1] (tanh), expression probabilities (softmax over the 8 classes)."""
    return torch.cat(
        [
            torch.sigmoid(raw[..., AU_SLICE]),
            torch.tanh(raw[..., VA_SLICE]),
            torch.softmax(raw[..., EXPR_SLICE], dim=-1),
        ],
        dim=-1,
    )


class CrossAttentionBlock(nn.Module):
    """Pre-norm residual block: `query` attends `context`, then a feed-forward layer."""

    def __init__(self, d_model: int, n_heads: int, ff_mult: int, dropout: float):
        super().__init__()
        self.norm_query = nn.LayerNorm(d_model)
        self.norm_context = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(
            nn.Linear(d_model, ff_mult * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ff_mult * d_model, d_model),
            nn.Dropout(dropout),
        )

    def forward(self, query: Tensor, context: Tensor, mask: Tensor | None, cache: CausalCache | None = None) -> Tensor:
        query = query + attention(self.attn, self.norm_query(query), self.norm_context(context), mask, cache)
        return query + self.ff(self.norm_ff(query))


class MMT(nn.Module):
    """Multi-Modality Transformer autoencoder built from a `{stream: dim}` map.

    `forward` is the training loss (so DDP/DeepSpeed wrappers see a forward call).
    """

    def __init__(self, streams: dict[str, int], config: MMTConfig):
        super().__init__()
        known = FACIAL_QUERY_ORDER + AUDIO_QUERY_ORDER
        unknown = sorted(set(streams) - set(known))
        if unknown:
            raise ValueError(
                f"MMT streams {unknown} have no role; expected names among {list(known)} "
                "(add the stream to FACIAL_QUERY_ORDER or AUDIO_QUERY_ORDER in "
                "reactdiff/models/mmt.py)"
            )
        self.streams = dict(streams)
        self.config = config
        # Present streams per modality, query first; a modality with no stream is skipped.
        per_modality = (
            [name for name in order if name in streams] for order in (FACIAL_QUERY_ORDER, AUDIO_QUERY_ORDER)
        )
        self.modalities = [names for names in per_modality if names]
        if not self.modalities:
            raise ValueError("MMT needs at least one input stream; got an empty stream map")
        d, heads, ff, drop = config.d_model, config.n_heads, config.ff_mult, config.dropout

        def block() -> CrossAttentionBlock:
            return CrossAttentionBlock(d, heads, ff, drop)

        # Linear then LayerNorm: the projected streams share one scale whatever the raw one.
        self.embed = nn.ModuleDict(
            {name: nn.Sequential(nn.Linear(dim, d), nn.LayerNorm(d)) for name, dim in streams.items()}
        )
        # One block per context stream, keyed by that stream (a lone query attends itself).
        self.intra = nn.ModuleDict({name: block() for names in self.modalities for name in (names[1:] or names[:1])})
        self.inter = block() if len(self.modalities) == 2 else None  # facial attends audio
        self.to_latent = nn.Sequential(
            nn.Linear(len(self.modalities) * d, d), nn.GELU(), nn.Linear(d, config.latent_dim)
        )

        self.decoder_in = nn.Linear(config.latent_dim, d)
        layer = nn.TransformerEncoderLayer(d, heads, ff * d, drop, activation="gelu", batch_first=True, norm_first=True)
        self.decoder = nn.TransformerEncoder(
            layer, config.decoder_layers, norm=nn.LayerNorm(d), enable_nested_tensor=False
        )
        self.head_3dmm = nn.Linear(d, FACE3D_DIM)
        self.head_emotion = nn.Linear(d, EMOTION_DIM)

        # The model predicts normalised 3DMM; set from the feature store manifest.
        self.register_buffer("threedmm_mean", torch.zeros(FACE3D_DIM))
        self.register_buffer("threedmm_std", torch.ones(FACE3D_DIM))
        # The range of the trained latents (`LatentStats`), fitted after stage 1 and read by stage 2:
        # model state, so a checkpoint's weights carry it.
        self.register_buffer("latent_center", torch.zeros(config.latent_dim))
        self.register_buffer("latent_half_range", torch.ones(config.latent_dim))
        self.register_buffer("latent_stats_set", torch.tensor(False))

    def set_threedmm_normalisation(self, mean, std) -> None:
        """Set the 3DMM mean/std (e.g. manifest["normalisation"]["3dmm_mean"/"3dmm_std"])."""
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean.numel() != FACE3D_DIM or std.numel() != FACE3D_DIM:
            raise ValueError(
                f"3DMM normalisation: expected {FACE3D_DIM} values for mean and std, "
                f"got {mean.numel()} and {std.numel()} (manifest.json 'normalisation')"
            )
        # A constant coefficient (std 0) is only centred: dividing by ~0 would blow it up.
        self.threedmm_mean.copy_(mean)
        self.threedmm_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def set_latent_stats(self, stats: LatentStats) -> None:
        self.latent_center.copy_(stats.center)
        self.latent_half_range.copy_(stats.half_range)
        self.latent_stats_set.fill_(True)

    def normalise_3dmm(self, threedmm: Tensor) -> Tensor:
        return (threedmm - self.threedmm_mean) / self.threedmm_std

    def _embed(self, name: str, feats: dict[str, Tensor], frames: int, offset: int) -> Tensor:
        if name not in feats:
            raise KeyError(
                f"MMT input is missing stream '{name}'; it was built for streams "
                f"{sorted(self.streams)} and got {sorted(feats)}"
            )
        x = feats[name].float()
        if x.dim() != 3 or x.shape[1] != frames or x.shape[2] != self.streams[name]:
            raise ValueError(
                f"MMT stream '{name}': expected a (batch, {frames} frames, {self.streams[name]}) "
                f"tensor like the other streams, got shape {tuple(x.shape)}"
            )
        if name == "3dmm":  # lite profile: the 3DMM input gets the same normalisation as targets
            x = self.normalise_3dmm(x)
        h = self.embed[name](x)
        return h + positional_encoding(h.shape[1], h.shape[2], h.device, offset)

    def encode(
        self, feats: dict[str, Tensor], causal_block: int | None = None, cache: CausalCache | None = None
    ) -> Tensor:
        """Features `{stream: (B, T, dim)}` → latent (B, T, latent_dim). With `cache`, `feats`
        are the next block after the frames the cache has seen (see `CausalCache`)."""
        first = self.modalities[0][0]
        frames = feats[first].shape[1] if first in feats else 0  # a missing stream raises below
        offset = 0 if cache is None else cache.frames
        mask = (
            None
            if causal_block is None or cache is not None
            else block_causal_mask(frames, causal_block, next(self.parameters()).device)
        )
        outputs = []
        for names in self.modalities:
            query = self._embed(names[0], feats, frames, offset)
            for name in names[1:] or names[:1]:
                context = query if name == names[0] else self._embed(name, feats, frames, offset)
                query = self.intra[name](query, context, mask, cache)
            outputs.append(query)
        if self.inter is not None:
            outputs[0] = self.inter(outputs[0], outputs[1], mask, cache)
        if cache is not None:
            cache.frames += frames
        return self.to_latent(torch.cat(outputs, dim=-1))

    def decode_normalised(
        self, latent: Tensor, causal_block: int | None = None, cache: CausalCache | None = None
    ) -> tuple[Tensor, Tensor]:
        """Latent → (normalised 3DMM (B, T, 58), activated emotion (B, T, 25))."""
        h = self.decoder_in(latent)
        h = h + positional_encoding(h.shape[1], h.shape[2], h.device, 0 if cache is None else cache.frames)
        mask = (
            None if causal_block is None or cache is not None else block_causal_mask(h.shape[1], causal_block, h.device)
        )
        h = self._run_decoder(h, mask, cache)
        return self.head_3dmm(h), activate_emotion(self.head_emotion(h))

    def _run_decoder(self, h: Tensor, mask: Tensor | None, cache: CausalCache | None) -> Tensor:
        """`self.decoder(h, mask)`: its pre-norm `TransformerEncoderLayer`s unrolled with their own
        modules (the checkpoint layout), so attention is fused SDPA in every mode and can read
        `cache`."""
        for layer in self.decoder.layers:
            normed = layer.norm1(h)
            h = h + layer.dropout1(attention(layer.self_attn, normed, normed, mask, cache))
            h = h + layer._ff_block(layer.norm2(h))
        if cache is not None:
            cache.frames += h.shape[1]
        return self.decoder.norm(h)

    def decode(
        self, latent: Tensor, causal_block: int | None = None, cache: CausalCache | None = None
    ) -> tuple[Tensor, Tensor]:
        """Latent (B, T, latent_dim) → (raw 3DMM (B, T, 58), emotion (B, T, 25)). With `cache`,
        `latent` holds the next block after the frames the cache has seen (see `CausalCache`)."""
        threedmm, emotion = self.decode_normalised(latent, causal_block, cache)
        return threedmm * self.threedmm_std + self.threedmm_mean, emotion

    def loss(self, feats: dict[str, Tensor], threedmm: Tensor, emotion: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """`w_3dmm·MSE(normalised 3DMM) + w_emotion·L1(activated emotion)`, means over frames
        and channels (the paper's per-frame sums differ only by a constant factor)."""
        latent = self.encode(feats)
        if self.training and self.config.latent_noise > 0:
            # Scaled by the detached batch std, so the encoder cannot outgrow the noise.
            scale = latent.detach().flatten(0, -2).std(dim=0)
            latent = latent + self.config.latent_noise * scale * torch.randn_like(latent)
        pred_3dmm, pred_emotion = self.decode_normalised(latent)
        mse = F.mse_loss(pred_3dmm, self.normalise_3dmm(threedmm.float()))
        l1 = F.l1_loss(pred_emotion, emotion.float())
        loss = self.config.w_3dmm * mse + self.config.w_emotion * l1
        return loss, {"mse_3dmm": mse.detach(), "l1_emotion": l1.detach()}

    forward = loss


class LatentStats:
    """Per-dimension range of the training latents; maps it onto [-1, 1] for stage 2.

    Min/max (not mean ± k·std) because DDIM sampling clamps x0 to [-1, 1]: every training
    latent must lie inside that box or it could never be generated.
    """

    def __init__(self, low: Tensor, high: Tensor):
        self.low, self.high = low, high

    @property
    def center(self) -> Tensor:
        return (self.high + self.low) / 2

    @property
    def half_range(self) -> Tensor:
        return ((self.high - self.low) / 2).clamp_min(1e-6)  # a constant dimension maps to 0


class LatentStatsAccumulator:
    """Accumulates `LatentStats` over batches of latents (..., D).

    Mergeable across workers: `count` sums and `low`/`high` reduce with min/max, e.g.
    `dist.all_reduce(acc.low, op=ReduceOp.MIN)`, `... acc.high, op=ReduceOp.MAX`,
    `... acc.count, op=ReduceOp.SUM`, or `acc.merge(other)` in one process.
    """

    def __init__(self, latent_dim: int):
        self.count = torch.zeros((), dtype=torch.float64)
        self.low = torch.full((latent_dim,), float("inf"))
        self.high = torch.full((latent_dim,), float("-inf"))

    def update(self, latents: Tensor) -> None:
        flat = latents.detach().reshape(-1, latents.shape[-1]).float().cpu()
        self.count += flat.shape[0]
        self.low = torch.minimum(self.low, flat.min(dim=0).values)
        self.high = torch.maximum(self.high, flat.max(dim=0).values)

    def merge(self, other: "LatentStatsAccumulator") -> None:
        self.count += other.count
        self.low = torch.minimum(self.low, other.low)
        self.high = torch.maximum(self.high, other.high)

    def finalize(self) -> LatentStats:
        if self.count == 0:
            raise ValueError("LatentStatsAccumulator.finalize: no latents were given to update()")
        return LatentStats(self.low.clone(), self.high.clone())
