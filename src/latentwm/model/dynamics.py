"""The dynamics model f_θ(z_τ, τ, d, actions, history) -> x̂ (DESIGN section 5): token layout, embeddings, head.

Tokens per frame t (S = R + 1 + 1 + 1 + N'), in the order `model/layout.py: TokenLayout` owns:
  [R registers | 1 shortcut | 1 action | 1 text | 1 proprio | N' latent]   (no text token when model.text_dim = 0;
  a proprio token only with model.proprio_input "slot")
- registers: R learned vectors, the same in every frame (scratch space for global state).
- shortcut: MLP(sinusoidal features of τ_t) + table[log2(1/d_t)]. τ is embedded continuously so off-grid signal
  levels (a re-noised context at τ_ctx = 0.9) are meaningful; d is one of log2(k_max) + 1 powers of two, so a table.
  Off-grid d is rounded to the nearest power of two in log space (no value check: it would sync the GPU).
- action: Linear(action that led INTO frame t); a learned no-action vector where it is unknown and at t = 0.
  Batches store actions[:, t] = action taken after frame t (DESIGN section 3), so forward() shifts by one.
  Unknown actions are replaced by 0 with torch.where before the linear layer and the result by the no-action vector,
  so NaN / huge values in masked entries cannot reach the output or the gradients.
- text: Linear(frozen sentence embedding of frame t's own text) (text_dim -> W); a learned no-text vector where the
  frame has none. Unlike the action it is not shifted: the text says what frame t shows (an instruction or a
  narration spanning it), so it conditions frame t itself. Independent of the action: any of the four combinations.
  Training drops each condition to its null vector with its own probability (objective.action/text_dropout), which
  is what classifier-free guidance in rollout.py relies on.
- latent: Linear(z) per token (model.condition_broadcast: plus the frame's action and text embeddings); with
  patch_group 2 each 2×2 block of the grid is one token of 4·D features. D is model.frame_dim: the encoder's
  latent_dim plus model.proprio_dim proprio channels that every token of a frame carries (DINO-WM's per-patch
  concatenation; the data attaches them), so the proprio is diffused and predicted with the frame.
- proprio (model.proprio_input "slot" only): Linear(the frame's noisy proprio, read from its first token's copy);
  the latent tokens then embed the encoder channels alone, and the head writes the slot's Linear output into every
  token's proprio channels (x̂ (B, T, N, latent_dim + P) either way: the frames' layout does not change).
- previous frame (model.previous_frame only): every latent token also adds Linear(the same token of the frame
  before, clean) — x_{t−1} from `conditions.History.frames` in a whole-clip pass, the KV cache's last committed
  frame when sampling — and a learned no-previous vector at frame 0. Same grouping and channels as the latent input.
Head: the stack's final RMSNorm, then Linear on the latent tokens -> x̂ (B, T, N, D) (ungrouped). With
model.dh_blocks > 0 the Linear is replaced by the DH head (RAE's DiT-DH, model/dh_head.py): a wide, shallow per-frame
transformer on the latent tokens, conditioned on the frame's shortcut embedding (the very vector `_tokens` puts in
the shortcut slot); it attends within the frame only, so causality and the KV cache are the backbone's.

What the output means (model.prediction): "x" the head gives x̂; "v" it gives the velocity v̂ = x − ε and
`_to_clean` returns x̂ = z + (1 − τ)·v̂, so forward/step hand x̂ to every caller either way; "next" (the next-frame
regression baseline) the inputs are clean frames, frame t's action token embeds the action taken AFTER frame t
(actions[:, t], no shift, used at t = 0 too) and the output at frame t is x̂_{t+1}.

Init: inputs and hidden projections N(0, 0.02) (GPT-2 style); the output projections of every attention and MLP
residual branch are zero, so each block starts as the identity and the residual stream is exactly the input
embedding at step 0 — deep stacks then start well conditioned without depth-dependent scaling (as DiT's adaLN-zero /
ReZero). The head is zero too, so the untrained model predicts x̂ = 0 = the mean of normalized latents (loss ≈ 1)
instead of a random linear map of the noise. Gradients still reach everything after the first optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from einops import rearrange

from latentwm.conditions import NO_CONDITIONS, NO_FRAME_CONDITIONS, Conditions, FrameConditions, History
from latentwm.config import ModelConfig
from latentwm.model.dh_head import DHHead, DHShape
from latentwm.model.layers import decay_groups, linear_flops
from latentwm.model.layout import TokenLayout
from latentwm.model.transformer import Block, KVCache, Transformer

TAU_FEATURES = 64
"""Sinusoidal features of τ fed to the shortcut MLP (32 frequencies × sin, cos)."""


def tau_features(tau: torch.Tensor, dim: int = TAU_FEATURES) -> torch.Tensor:
    """(...,) τ in [0, 1] -> (..., dim) float32: cos/sin of 1000·τ at periods 2π .. 2π·10⁴ (diffusion-style)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=tau.device, dtype=torch.float32) / half)
    args = tau.float()[..., None] * 1000.0 * freqs
    return torch.cat([args.cos(), args.sin()], dim=-1)


class DynamicsModel(nn.Module):
    """Block-causal space/time transformer predicting clean latents x̂ from noisy z (x-, v- or next-frame
    prediction, model.prediction)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        g = cfg.patch_group
        self.grid = cfg.latent_grid // g  # side of the (grouped) token grid
        self.num_tokens = self.grid**2  # N'
        self.patch_dim = cfg.token_dim * g * g
        self.layout = TokenLayout.from_config(cfg)
        self.special = self.layout.special  # tokens before the latents
        self.tokens_per_frame = self.layout.tokens_per_frame  # S
        self.num_step_sizes = int(math.log2(cfg.k_max)) + 1
        W = cfg.width
        self.registers = nn.Parameter(torch.empty(cfg.registers, W))
        self.tau_mlp = nn.Sequential(nn.Linear(TAU_FEATURES, W), nn.SiLU(), nn.Linear(W, W))
        self.step_embed = nn.Embedding(self.num_step_sizes, W)
        self.action_in = nn.Linear(cfg.action_dim, W)
        self.no_action = nn.Parameter(torch.empty(W))
        if cfg.text_dim > 0:
            self.text_in = nn.Linear(cfg.text_dim, W)
            self.no_text = nn.Parameter(torch.empty(W))
        self.latent_in = nn.Linear(self.patch_dim, W)
        if cfg.previous_frame:  # the frame before, clean, into every latent token
            self.previous_in = nn.Linear(self.patch_dim, W)
            self.no_previous = nn.Parameter(torch.empty(W))
        if cfg.proprio_slot:  # the proprio's own token: in from the frame's proprio, out to it
            self.proprio_in = nn.Linear(cfg.proprio_dim, W)
            self.proprio_head = nn.Linear(W, cfg.proprio_dim)
        self.transformer = Transformer(cfg, self.layout)
        if cfg.dh_blocks > 0:  # the DH head replaces the plain Linear (no `head` then: state dicts say which)
            self.dh_head = DHHead.from_config(cfg)
        else:
            self.head = nn.Linear(W, self.patch_dim)
        self.reset_parameters()

    # ---------------------------------------------------------------------------------------------- init, size

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
            elif hasattr(m, "weight") and m.__class__.__name__ == "RMSNorm":
                nn.init.ones_(cast(torch.Tensor, m.weight))  # torch types a module's attributes Tensor | Module
        nn.init.normal_(self.registers, std=0.02)
        nn.init.normal_(self.no_action, std=0.02)
        if self.cfg.text_dim > 0:
            nn.init.normal_(self.no_text, std=0.02)
        if self.cfg.previous_frame:
            nn.init.normal_(self.no_previous, std=0.02)
        # every residual branch starts at zero: blocks are identities (nn.ModuleList iterates as nn.Module)
        for blk in cast("Iterable[Block]", self.transformer.blocks):
            nn.init.zeros_(blk.attn.o.weight)
            nn.init.zeros_(blk.mlp.down.weight)
        if self.cfg.dh_blocks > 0:  # adaLN-zero gates and a zero output Linear: x̂ = 0 at step 0 as well
            self.dh_head.reset_parameters()
        else:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        if self.cfg.proprio_slot:  # x̂ = 0 at step 0 for the proprio too
            nn.init.zeros_(self.proprio_head.weight)
            nn.init.zeros_(self.proprio_head.bias)

    def repeated_blocks(self) -> list[nn.Module]:
        """The backbone's blocks, then the DH head's: the units compiled one by one (train.compile_scope "blocks")
        and sharded one by one under FSDP2 (one all-gather per block keeps peak memory at one block)."""
        return [*self.transformer.blocks, *(self.dh_head.blocks if self.cfg.dh_blocks else [])]

    def compile_sampling(self, backend: str = "inductor") -> DynamicsModel:
        """torch.compile what a cached denoising pass runs, block by block, in place: the space blocks' forward,
        the time blocks' `time_core` (plain tensors in, so the cache's growth and the layer index cost one
        dynamic-shape recompile, not one per frame) and the DH head's blocks. Outputs equal eager to float
        tolerance; the first rollout pays the compilation (seconds on the CPU, tens of seconds on a GPU).
        Returns self; a second call does nothing."""
        if getattr(self, "_sampling_compiled", False):
            return self
        self._sampling_compiled = True
        for blk in cast("Iterable[Block]", self.transformer.blocks):  # nn.ModuleList iterates as nn.Module
            if blk.kind == "space":
                blk.compile(backend=backend, dynamic=None)
            else:
                # an instance attribute shadowing the method on purpose, which mypy refuses for any method
                blk.time_core = torch.compile(blk.time_core, backend=backend, dynamic=None)  # type: ignore[method-assign]
        for head_blk in self.dh_head.blocks if self.cfg.dh_blocks else []:
            head_blk.compile(backend=backend, dynamic=None)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def param_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: weight decay on matrices only (not on norms, biases, embeddings' 1-D tokens)."""
        return decay_groups(self, weight_decay)

    def flops_per_frame(self, context_len: int) -> int:
        """Analytic matmul FLOPs (2 per multiply-add) of one forward for one generated frame that attends to
        `context_len` earlier frames (capped by the window). Training costs ≈ 3× this per frame (fwd + bwd)."""
        c, S, W = self.cfg, self.tokens_per_frame, self.cfg.width
        qkvo = linear_flops(S, W, W) * 2 + linear_flops(S, W, 2 * c.kv_heads * c.head_dim)
        mlp = linear_flops(S, W, 2 * c.mlp_hidden) + linear_flops(S, c.mlp_hidden, W)
        ctx = min(context_len + 1, c.context_frames)
        attn_space = 2 * 2 * S * S * W  # logits + weighted values, all heads
        attn_time = 2 * 2 * S * ctx * W
        n_time = len(self.transformer.time_layers)
        stack = c.depth * (qkvo + mlp) + (c.depth - n_time) * attn_space + n_time * attn_time
        head = (
            DHShape.from_config(c).flops_per_frame()
            if c.dh_blocks > 0
            else linear_flops(self.num_tokens, W, self.patch_dim)
        )
        io = (
            linear_flops(self.num_tokens, self.patch_dim, W)
            + head
            + linear_flops(1, c.action_dim, W)
            + linear_flops(1, TAU_FEATURES, W)
            + linear_flops(1, W, W)
            + linear_flops(1, c.text_dim, W)
            + (2 * linear_flops(1, c.proprio_dim, W) if c.proprio_slot else 0)
            + (linear_flops(self.num_tokens, self.patch_dim, W) if c.previous_frame else 0)
        )
        return int(stack + io)

    # ---------------------------------------------------------------------------------------------- embeddings

    def group(self, z: torch.Tensor) -> torch.Tensor:
        """(..., N, D) on the latent grid (row-major) -> (..., N', D·g²)."""
        g = self.cfg.patch_group
        if g == 1:
            return z
        return rearrange(z, "... (h p w q) d -> ... (h w) (p q d)", h=self.grid, p=g, q=g)

    def ungroup(self, x: torch.Tensor) -> torch.Tensor:
        """(..., N', D·g²) -> (..., N, D); inverse of `group`."""
        g = self.cfg.patch_group
        if g == 1:
            return x
        return rearrange(x, "... (h w) (p q d) -> ... (h p w q) d", h=self.grid, p=g, q=g)

    def _embed_actions(self, a: torch.Tensor | None, known: torch.Tensor | None, B: int, T: int) -> torch.Tensor:
        """a (B, T, A) action that led into each frame, known (B, T) bool -> (B, T, W) action tokens."""
        none = self.no_action.expand(B, T, -1)
        if a is None or known is None:
            return none
        k = known[..., None]
        a = torch.where(k, a, torch.zeros((), dtype=a.dtype, device=a.device))  # NaN-safe masking
        a = F.pad(a, (0, self.cfg.action_dim - a.shape[-1]))
        return torch.where(k, self.action_in(a), none)

    def _embed_text(self, text: torch.Tensor | None, mask: torch.Tensor | None, B: int, T: int) -> torch.Tensor | None:
        """text (B, T, E) sentence embeddings of each frame's text, mask (B, T) bool -> (B, T, W) text tokens (None
        when the model has no text slot)."""
        if self.cfg.text_dim == 0:
            return None
        none = self.no_text.expand(B, T, -1)
        if text is None or mask is None:
            return none
        k = mask[..., None]
        text = torch.where(k, text, torch.zeros((), dtype=text.dtype, device=text.device))  # NaN-safe masking
        return torch.where(k, self.text_in(text), none)

    def _latent_part(self, z: torch.Tensor) -> torch.Tensor:
        """(..., N, D) frames -> (..., N', patch_dim): the grouped channels a latent token's input Linear reads
        (without the proprio channels when the proprio has its own slot)."""
        return self.group(z[..., : -self.cfg.proprio_dim] if self.cfg.proprio_slot else z)

    def _embed_previous(self, prev: torch.Tensor | None, B: int, first: bool) -> torch.Tensor | None:
        """prev (B, T', N, D): the clean frame before each of T' frames, or None; first: one more frame in front
        with no frame before it (frame 0 of a clip, or a step at time index 0) -> (B, T' (+1), N', W) what the
        latent tokens add, None without model.previous_frame."""
        if not self.cfg.previous_frame:
            return None
        none = self.no_previous.expand(B, 1, self.num_tokens, -1)
        if prev is None:
            return none
        emb = self.previous_in(self._latent_part(prev))
        return torch.cat([none.to(emb.dtype), emb], 1) if first else emb

    def _tokens(self, z, tau, d, act, txt=None, prev=None) -> torch.Tensor:
        """z (B, T, N, D), tau (B, T), d (B, T), act (B, T, W), txt (B, T, W) or None, prev (B, T, N', W) previous-
        frame embeddings or None -> tokens (B, T, S, W)."""
        B, T = z.shape[:2]
        slots = {"action": act, "text": txt}
        if self.cfg.proprio_slot:  # the slot reads the first token's (noisy) proprio copy; latents the rest
            P = self.cfg.proprio_dim
            slots["proprio"] = self.proprio_in(z[..., 0, -P:])
        lat = self.latent_in(self._latent_part(z))  # (B, T, N', W)
        if prev is not None:
            lat = lat + prev
        if self.cfg.condition_broadcast:  # every latent token also carries its frame's conditions
            lat = lat + act[:, :, None] + (0 if txt is None else txt[:, :, None])
        idx = torch.round(-torch.log2(d.float())).clamp(0, self.num_step_sizes - 1).long()
        short = self.tau_mlp(tau_features(tau)) + self.step_embed(idx)  # (B, T, W)
        reg = self.registers.expand(B, T, -1, -1)  # (B, T, R, W)
        slots["shortcut"] = short
        parts = [reg, *(slots[name][:, :, None] for name in self.layout.conditions), lat]
        # The residual stream runs in the parameters' dtype: fp32 under bf16 autocast (the linears' bf16 outputs
        # are upcast here and when added back), so small residual updates are not rounded away across depth.
        dt = self.registers.dtype
        return torch.cat([p.to(dt) for p in parts], dim=2)

    def _head(self, h: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """h (..., S, W) final-normed outputs, tokens (..., S, W) the stack's input tokens of the same frames ->
        x̂ (..., N, D). The DH head is conditioned on each frame's shortcut slot: the very vector `_tokens` built."""
        lat = h[..., self.layout.latent_slice, :]  # (..., N', W)
        if self.cfg.dh_blocks == 0:
            out = self.ungroup(self.head(lat)).float()
        else:
            out = self.ungroup(self.dh_head(lat, tokens[..., self.layout.slot("shortcut"), :])).float()
        if not self.cfg.proprio_slot:
            return out
        prop = self.proprio_head(h[..., self.layout.slot("proprio"), :]).float()  # (..., P): every token's copy
        return torch.cat([out, prop[..., None, :].expand(*out.shape[:-1], prop.shape[-1])], -1)

    def _to_clean(self, out: torch.Tensor, z: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """The head's output out (..., N, D) as the x̂ every caller gets: model.prediction "v" converts the velocity,
        x̂ = z + (1 − τ)·v̂ (z (..., N, D) the noisy input, tau (...,) its level); "x" and "next" return out.
        With a proprio slot the velocity is the first token's (the copy the slot read), so every token's proprio
        is the same x̂ (and v̂ = (x̂ − z)/(1 − τ) is each copy's own exactly)."""
        if self.cfg.prediction != "v":
            return out
        if self.cfg.proprio_slot:
            P = self.cfg.proprio_dim
            z = torch.cat([z[..., :-P], z[..., :1, -P:].expand(*z.shape[:-1], P)], -1)
        return z.float() + (1.0 - tau.float())[..., None, None] * out

    # ---------------------------------------------------------------------------------------------- checks

    def _check_latents(self, z: torch.Tensor, frame_dims: str) -> None:
        c = self.cfg
        want_ndim = 4 if frame_dims == "B, T" else 3
        if z.dim() != want_ndim or z.shape[-2] != c.num_latent_tokens or z.shape[-1] != c.frame_dim:
            prop = f" + proprio_dim {c.proprio_dim}" if c.proprio_dim else ""
            raise ValueError(
                f"z: expected shape ({frame_dims}, N={c.num_latent_tokens}, D={c.frame_dim}"
                f"{' = latent_dim ' + str(c.latent_dim) + prop if prop else ''}), got {tuple(z.shape)}"
            )

    @staticmethod
    def _per_frame(x, shape: tuple, name: str, dims: str, device) -> torch.Tensor:
        x = torch.as_tensor(x, device=device)
        if x.dim() == 0:
            return x.float().expand(shape)
        if tuple(x.shape) != tuple(shape):
            raise ValueError(f"{name}: expected shape ({dims}) = {tuple(shape)} or a scalar, got {tuple(x.shape)}")
        return x.float()

    def _check_actions(self, a, mask, lead: tuple, dims: str, names: tuple[str, str]):
        if a is None:
            return None, None
        if a.dim() != len(lead) + 1 or tuple(a.shape[:-1]) != lead or a.shape[-1] > self.cfg.action_dim:
            raise ValueError(
                f"{names[0]}: expected shape ({dims}, A) = {lead + ('A',)} with "
                f"A <= model.action_dim = {self.cfg.action_dim}, got {tuple(a.shape)}"
            )
        if mask is None:  # no mask given: every action is known (as in rollout(); False in a mask = unknown)
            return a, torch.ones(lead, dtype=torch.bool, device=a.device)
        if tuple(mask.shape) != lead:
            raise ValueError(f"{names[1]}: expected shape ({dims}) = {lead}, got {tuple(mask.shape)}")
        return a, mask.to(device=a.device, dtype=torch.bool)

    def _check_text(self, text, mask, lead: tuple, dims: str, names: tuple[str, str]):
        if text is None:
            return None, None
        if self.cfg.text_dim == 0:
            raise ValueError(
                f"{names[0]}: this model has no text slot (model.text_dim = 0); train with "
                "model.text_dim = the text encoder's width to condition on text"
            )
        if text.dim() != len(lead) + 1 or tuple(text.shape[:-1]) != lead or text.shape[-1] != self.cfg.text_dim:
            raise ValueError(
                f"{names[0]}: expected shape ({dims}, E) = {lead + (self.cfg.text_dim,)} "
                f"(E = model.text_dim), got {tuple(text.shape)}"
            )
        if mask is None:
            return text, torch.ones(lead, dtype=torch.bool, device=text.device)
        if tuple(mask.shape) != lead:
            raise ValueError(f"{names[1]}: expected shape ({dims}) = {lead}, got {tuple(mask.shape)}")
        return text, mask.to(device=text.device, dtype=torch.bool)

    # ---------------------------------------------------------------------------------------------- API

    def forward(self, z, tau, step, actions=None, action_mask=None, *, text=None, text_mask=None, history=None):
        """Full sequence, frames 0..T−1 (block-causal: frame t sees frames ≤ t within the window) -> x̂ (B, T, N, D)
        float32. The training entry point (DDP/FSDP wrap it); `hidden` is the same pass with its token outputs.

        z (B, T, N, D) noisy latents; tau (B, T) signal levels in [0, 1]; step (B, T) step sizes d (powers of two in
        [1/k_max, 1]); tau/step may be scalars. actions (B, T, A), A <= action_dim (zero-padded), actions[:, t] taken
        after frame t (frame t's token embeds actions[:, t − 1], none at t = 0; prediction "next": actions[:, t]
        itself, frame 0 included, and the output at frame t is x̂_{t+1}); action_mask (B, T) bool, False = unknown;
        None = all known (no mask given);
        actions None = all unknown. text (B, T, E) (E = model.text_dim): the sentence embedding of each frame's own
        text; text_mask (B, T) bool, False = no text (None with text: all present; text None: no text anywhere).
        history: `History` or None — the clip's clean frames: frame t − 1's is frame t's previous-frame input
        (model.previous_frame; required there), and with history.stream a second, clean stream of the same pass
        (teacher forcing), so every frame of a clip trains as sampling uses it.
        """
        return self.hidden(z, tau, step, Conditions(actions, action_mask, text, text_mask), history)[0]

    def hidden(self, z, tau, step, cond: Conditions | None = None, history=None):
        """`forward`'s pass with its token outputs: -> (x̂ (B, T, N, D) float32, hidden (B, T, S, W) final-normed).
        z, tau, step, history as `forward`; cond: the clip's actions, action_mask, text, text_mask (as `forward`'s
        arguments; None: none; its guidance scales are for samplers and not read here)."""
        c = cond if cond is not None else NO_CONDITIONS
        self._check_latents(z, "B, T")
        B, T = z.shape[:2]
        tau = self._per_frame(tau, (B, T), "tau", "B, T", z.device)
        d = self._per_frame(step, (B, T), "step", "B, T", z.device)
        a, known = self._check_actions(c.actions, c.action_mask, (B, T), "B, T", ("actions", "action_mask"))
        if a is not None and self.cfg.prediction != "next":  # frame t's token: the action INTO it, a[:, t − 1]
            a = torch.cat([torch.zeros_like(a[:, :1]), a[:, :-1]], 1)
            known = torch.cat([torch.zeros_like(known[:, :1]), known[:, :-1]], 1)
        txt, has = self._check_text(c.text, c.text_mask, (B, T), "B, T", ("text", "text_mask"))
        act, txt_tok = self._embed_actions(a, known, B, T), self._embed_text(txt, has, B, T)
        frames = self._check_history(history, z)
        prev = self._embed_previous(None if frames is None else frames[:, :-1], B, first=True)
        tokens = self._tokens(z, tau, d, act, txt_tok, prev)
        if history is None or not history.stream:
            h = self.transformer(tokens)
        else:
            ones, finest = torch.ones_like(tau), torch.full_like(d, self.clean_step)
            clean = self._tokens(history.frames, ones, finest, act, txt_tok, prev)
            h = self.transformer(torch.cat([clean, tokens], 1), teacher_forced=True)[:, T:]
        return self._to_clean(self._head(h, tokens), z, tau), h

    def _check_history(self, history: History | None, z: torch.Tensor) -> torch.Tensor | None:
        """history's clean frames (B, T, N, D) after checking them against z (B, T, N, D); None without history."""
        if history is None:
            if self.cfg.previous_frame:
                raise ValueError(
                    "history: model.previous_frame reads each frame's predecessor from the clip's clean frames; "
                    "pass history=History(x) with x (B, T, N, D) clean (a clean pass: x = z)"
                )
            return None
        if not isinstance(history, History):
            raise ValueError(f"history: expected a conditions.History(frames, stream), got {type(history).__name__}")
        if history.stream and self.cfg.prediction == "next":
            raise ValueError("history.stream: the next-frame model is teacher forced already (its inputs are clean)")
        if tuple(history.frames.shape) != tuple(z.shape):
            raise ValueError(
                f"history.frames: expected the shape of z {tuple(z.shape)}, got {tuple(history.frames.shape)}"
            )
        return history.frames

    @property
    def clean_step(self) -> float:
        """The finest step size 1/k_max: what a clean (τ = 1) frame is labelled with when features are read."""
        return 1.0 / self.cfg.k_max

    def clean_hidden(self, latents, actions=None, action_mask=None, text=None, text_mask=None) -> torch.Tensor:
        """latents (B, T, N, D) clean, actions (B, T, A), action_mask (B, T), text (B, T, E), text_mask (B, T) ->
        hidden (B, T, S, W): the token outputs of a clean pass (τ = 1), what probes and agent heads read
        (TokenLayout.special_slice)."""
        cond = Conditions(actions, action_mask, text, text_mask)
        return self.hidden(latents, 1.0, self.clean_step, cond, History(latents))[1]

    def init_cache(self, batch_size: int, device=None, dtype=None) -> KVCache:
        """An empty KV cache for `batch_size` sequences. device defaults to the parameters'; dtype to the active
        autocast dtype on that device (bf16 keys are what autocast produces: storing them in fp32 would only double
        the memory and add a cast per step), else the parameters'."""
        if dtype is None:
            dev = torch.device(device) if device is not None else self.registers.device
            if dev.type in ("cuda", "cpu", "xpu") and torch.is_autocast_enabled(dev.type):
                dtype = torch.get_autocast_dtype(dev.type)
        return self.transformer.init_cache(batch_size, device=device, dtype=dtype)

    def step(
        self,
        z,
        tau,
        step,
        cond: FrameConditions | None = None,
        cache=None,
        commit=False,
        return_hidden=False,
    ):
        """One new frame at absolute index cache.time_index (0 without a cache), attending to the cached frames.

        z (B, N, D); tau (B,), step (B,) (or scalars). cond: this frame's conditions (None: none) — cond.action
        (B, A) the action that led into this frame, cond.action_mask (B,) bool (False = unknown, None = known;
        action None = unknown; ignored at time index 0, like frame 0 of forward()); prediction "next": the action
        taken AFTER this frame (used at time index 0 too) and the output is the next frame's x̂. cond.text (B, E):
        this frame's own text embedding, cond.text_mask (B,) bool (None with text: present; text None: no text).
        commit=False leaves the cache untouched (denoising steps); commit=True appends this frame's keys/values
        (window-bounded), advances cache.time_index and (model.previous_frame) keeps z as cache.previous, the next
        frame's previous-frame input. -> x̂ (B, N, D) [, hidden (B, S, W)].
        Equals forward() on the whole sequence at this frame, to float tolerance.
        """
        self._check_latents(z, "B")
        B = z.shape[0]
        tau = self._per_frame(tau, (B,), "tau", "B", z.device)[:, None]
        d = self._per_frame(step, (B,), "step", "B", z.device)[:, None]
        c = cond if cond is not None else NO_FRAME_CONDITIONS
        a, known = self._check_actions(c.action, c.action_mask, (B,), "B", ("cond.action", "cond.action_mask"))
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"cache: holds batch {cache.batch_size}, z has batch {B} (use cache.expand(n))")
        first = cache is None or cache.time_index == 0  # "next": the action after frame 0 is its condition
        if a is None or (first and self.cfg.prediction != "next"):
            act = self._embed_actions(None, None, B, 1)
        else:
            act = self._embed_actions(a[:, None], known[:, None], B, 1)
        txt, has = self._check_text(c.text, c.text_mask, (B,), "B", ("cond.text", "cond.text_mask"))
        txt = self._embed_text(None if txt is None else txt[:, None], None if has is None else has[:, None], B, 1)
        prev = None if first or cache is None or cache.previous is None else cache.previous[:, None]
        if self.cfg.previous_frame and not first and prev is None:
            raise ValueError("cache: model.previous_frame needs the last committed frame (cache.previous), found none")
        prev_emb = self._embed_previous(prev, B, first=prev is None)
        tokens = self._tokens(z[:, None], tau, d, act, txt, prev_emb)[:, 0]
        h = self.transformer.step(tokens, cache, commit)
        if commit and self.cfg.previous_frame:
            assert cache is not None  # transformer.step refuses a commit without one
            cache.previous = z
        x_hat = self._to_clean(self._head(h, tokens), z, tau[:, 0])
        return (x_hat, h) if return_hidden else x_hat


def approx_param_count(m: ModelConfig) -> int:
    """Closed-form parameter count of the dynamics model (matches `DynamicsModel.num_parameters` to ~1%)."""
    w, hd = m.width, m.head_dim
    attn = w * w * 2 + 2 * w * m.kv_heads * hd + 2 * hd  # q, o, k, v, qk-norm
    mlp = 3 * w * m.mlp_hidden
    block = attn + mlp + 2 * w
    g = m.patch_group**2
    io = 2 * (m.token_dim * g * w) + (m.action_dim + m.text_dim) * w + TokenLayout.from_config(m).special * w
    io += 2 * m.proprio_dim * w if m.proprio_slot else 0
    io += (m.token_dim * g + 2) * w if m.previous_frame else 0  # Linear + bias + the no-previous vector
    if m.dh_blocks > 0:  # the DH head (exact count) instead of the plain head's W × patch_dim
        io += DHShape.from_config(m).num_parameters() - m.token_dim * g * w
    return m.depth * block + io + math.ceil(w * 2 * 64)  # + τ / step-size embedding MLPs (order of magnitude)


__all__ = ["DynamicsModel", "History", "approx_param_count", "KVCache", "tau_features", "TAU_FEATURES"]
