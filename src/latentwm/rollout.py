"""K-step sampling with the KV cache: observe context frames, then generate futures autoregressively.

To generate frame t with K steps (K a power of two ≤ k_max): z ← ε, τ ← 0, d ← 1/K; K times:
x̂ = f(z, τ, d, cache); z ← z + d·(x̂ − z)/(1 − τ); τ ← τ + d. The last x̂ is the frame. One extra pass writes the
finished frame into the cache at signal level τ_ctx (1.0 clean; e.g. 0.9 lightly re-noised, which makes long rollouts
robust to their own errors). Observed context frames enter the cache the same way.

Action convention (docs/design.md section 3): actions[:, t] is taken after frame t, so frame t+1 is generated from
actions[:, t]. A rollout of H frames after C context frames needs actions[:, :C + H − 1].
Text is per frame and not shifted: frame t is observed / generated with text[:, t] (a sentence for the whole rollout
may be given once as (B, E)).

Classifier-free guidance (`Guided`): the conditional branch and each null branch (no text, no action) run as one
batched step over [cond | null…] rows with one KV cache, and x̂ = x̂_c + Σ_k (w_k − 1)·(x̂_c − x̂_k) — for one
condition x̂_null + w·(x̂_c − x̂_null). Every branch commits the same finished frame with its own conditions. With
all scales 1 there is no null branch at all, so it is exactly plain conditional sampling.

Next-frame models (model.prediction "next", deterministic: K, noise and tau_ctx are ignored, every frame enters
clean): frame t's pass conditions on the action taken AFTER frame t and outputs frame t+1. So the newest frame waits
on the cache as `cache.pending` until that action is known: `commit_frame(x, FrameConditions(a))` commits the
pending frame with a (the action into x) and makes x pending; `sample_frame(..., FrameConditions(a))` is the
pending frame's pass with a (commit=False), i.e. the prediction of the next frame. The same action index generates
frame t in every mode (actions[:, t − 1]), so observe / rollout / planning call these functions the same way; an
observed history waits for the candidates' first action, which is what planning (one observed history, many
candidates) needs. Guidance works unchanged (the pending frame's pass is the one guided). `frame_hidden` /
`clip_hidden` give features that never see the action taken after their frame in either mode (what policies and
probes read).
"""

from __future__ import annotations

import contextlib
import operator
from dataclasses import dataclass

import torch

from latentwm.conditions import NO_CONDITIONS, NO_FRAME_CONDITIONS, Conditions, FrameConditions


def check_sample_steps(sample_steps, k_max: int) -> int:
    """K as an int, or a ValueError: K must be a power of two ≤ k_max (step size d = 1/K on the model's grid)."""
    try:
        k = operator.index(sample_steps)
    except TypeError:
        k = None
    if isinstance(sample_steps, bool) or k is None or k < 1 or k & (k - 1) or k > k_max:
        raise ValueError(
            f"sample_steps must be a power of two between 1 and the model's k_max = {k_max} (step "
            f"size 1/sample_steps on its grid), got {sample_steps!r}"
        )
    return k


@dataclass(frozen=True)
class Sampling:
    """How `rollout` draws frames. steps: K denoising steps per frame, a power of two ≤ the model's k_max; tau_ctx:
    the signal level finished frames enter the cache at (1.0 clean; e.g. 0.9 lightly re-noised, which makes long
    rollouts robust to their own errors); grad: keep the graph (gradient planners, K = 1). A next-frame model
    ignores steps and tau_ctx."""

    steps: int = 4
    tau_ctx: float = 1.0
    grad: bool = False


def _ones(x: torch.Tensor, value: float) -> torch.Tensor:
    return torch.full((x.shape[0],), value, device=x.device, dtype=torch.float32)


def predicts_next(model) -> bool:
    """Whether `model` (a DynamicsModel or a Guided view) is a next-frame regression model (model.prediction)."""
    return getattr(model.cfg, "prediction", "x") == "next"


def _commit_pending(model, cache, action: FrameConditions) -> None:
    """Next-frame mode: commit cache.pending (B, N, D) with the action taken after it (action.action (B, A) /
    action.action_mask (B,); None: unknown) and its own text; it is no longer pending."""
    x = cache.pending
    text = cache.pending_text or NO_FRAME_CONDITIONS
    model.step(
        x,
        _ones(x, 1.0),
        _ones(x, 1.0 / model.cfg.k_max),
        text.with_action(action.action, action.action_mask),
        cache=cache,
        commit=True,
    )
    cache.pending, cache.pending_text = None, None


class Guided:
    """Classifier-free guidance as a model: `step` runs the conditional branch and the null branches of the scales
    that are not 1 in one batched call, rows branch-major ([cond B | no-text B | no-action B]), and returns the
    guided x̂ (B, N, D). Its KV cache holds every branch (init_cache(B) has B·branches rows); `cache.expand(n)`
    keeps the branch-major order, so planners may expand it like a plain cache."""

    def __init__(self, model, text_guidance: float = 1.0, action_guidance: float = 1.0):
        self.model, self.cfg = model, model.cfg
        self.nulls = [(k, float(w)) for k, w in (("text", text_guidance), ("action", action_guidance)) if w != 1.0]
        self.branches = 1 + len(self.nulls)

    def init_cache(self, batch_size: int, device=None, dtype=None):
        return self.model.init_cache(batch_size * self.branches, device=device, dtype=dtype)

    def step(self, z, tau, step, cond: FrameConditions | None = None, cache=None, commit=False, return_hidden=False):
        """As DynamicsModel.step for B rows; the cache holds B·branches rows."""
        n, B = self.branches, z.shape[0]
        c = cond if cond is not None else NO_FRAME_CONDITIONS
        rep = lambda t: t if t is None or not torch.is_tensor(t) or t.dim() == 0 else t.repeat(n, *[1] * (t.dim() - 1))  # noqa: E731
        off = torch.zeros((), dtype=torch.bool, device=z.device)
        a_mask = t_mask = None
        if c.action is not None:
            m = c.action_mask if c.action_mask is not None else torch.ones(B, dtype=torch.bool, device=z.device)
            a_mask = torch.cat([m] + [m & off if k == "action" else m for k, _ in self.nulls])
        if c.text is not None:
            m = c.text_mask if c.text_mask is not None else torch.ones(B, dtype=torch.bool, device=z.device)
            t_mask = torch.cat([m] + [m & off if k == "text" else m for k, _ in self.nulls])
        out = self.model.step(
            rep(z),
            rep(tau),
            rep(step),
            FrameConditions(rep(c.action), a_mask, rep(c.text), t_mask),
            cache=cache,
            commit=commit,
            return_hidden=return_hidden,
        )
        x = out[0] if return_hidden else out
        xs = x.view(n, B, *x.shape[1:])
        guided = xs[0]
        for i, (_, w) in enumerate(self.nulls, start=1):
            guided = guided + (w - 1.0) * (xs[0] - xs[i])
        return (guided, out[1][:B]) if return_hidden else guided


def guided(model, text_guidance: float = 1.0, action_guidance: float = 1.0):
    """`model` itself when both scales are 1 (plain conditional sampling, exactly), else a `Guided` view of it."""
    if text_guidance == 1.0 and action_guidance == 1.0:
        return model
    if text_guidance != 1.0 and getattr(model.cfg, "text_dim", 0) == 0:
        raise ValueError(f"text_guidance {text_guidance}: the model has no text slot (model.text_dim = 0)")
    return Guided(model, text_guidance, action_guidance)


def commit_frame(
    model,
    cache,
    x: torch.Tensor,
    cond: FrameConditions | None = None,
    tau_ctx: float = 1.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Write the finished frame x (B, N, D) into the cache at signal level tau_ctx (one pass, output unused).
    cond: x's conditions (the action into x, x's text), or None.
    Next-frame mode: the pending frame is committed with cond's action (the action taken after it) and x becomes
    pending with cond's text (tau_ctx and noise ignored: that model only ever sees clean frames)."""
    c = cond if cond is not None else NO_FRAME_CONDITIONS
    if predicts_next(model):
        if cache.pending is not None:
            _commit_pending(model, cache, c)
        cache.pending, cache.pending_text = x, c.text_only()
        return
    z = x
    if tau_ctx < 1.0:
        eps = noise if noise is not None else torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        z = (1.0 - tau_ctx) * eps + tau_ctx * x
    d_min = 1.0 / model.cfg.k_max
    model.step(z, _ones(x, tau_ctx), _ones(x, d_min), c, cache=cache, commit=True)


def sample_frame(
    model,
    cache,
    sample_steps: int,
    noise: torch.Tensor,
    cond: FrameConditions | None = None,
    batch: int | None = None,
) -> torch.Tensor:
    """Generate one frame (B, N, D) with K = sample_steps denoising steps (a power of two ≤ k_max, else a
    ValueError); the cache is read, not written.

    noise: (B, N, D), or (1, N, D) shared by all B candidates (common random numbers). cond: this frame's
    conditions (the action into it (B, A), its text (B, E)) or None.
    Next-frame mode: one pass of the pending frame (its own text) with cond's action, the action taken after it;
    K, noise and cond's text are not used.
    """
    sample_steps = check_sample_steps(sample_steps, model.cfg.k_max)
    c = cond if cond is not None else NO_FRAME_CONDITIONS
    if predicts_next(model):
        if cache is None or cache.pending is None:
            raise ValueError(
                "sample_frame: a next-frame model (model.prediction 'next') predicts from the newest "
                "observed frame; observe at least one frame into the cache first"
            )
        x = cache.pending
        pending = (cache.pending_text or NO_FRAME_CONDITIONS).with_action(c.action, c.action_mask)
        return model.step(x, _ones(x, 1.0), _ones(x, 1.0 / model.cfg.k_max), pending, cache=cache, commit=False)
    B = batch or noise.shape[0]
    z = noise.expand(B, *noise.shape[1:]) if noise.shape[0] != B else noise
    d = 1.0 / sample_steps
    tau = 0.0
    x_hat = z
    for k in range(sample_steps):
        x_hat = model.step(
            z,
            torch.full((B,), tau, device=z.device),
            torch.full((B,), d, device=z.device),
            c,
            cache=cache,
            commit=False,
        )
        if k < sample_steps - 1:
            z = z + d * (x_hat - z) / (1.0 - tau)
            tau += d
    return x_hat


def frame_hidden(
    model, cache, x: torch.Tensor, cond: FrameConditions | None = None, commit: bool = True
) -> torch.Tensor:
    """Token outputs (B, S, W) of the clean pass (τ = 1) of frame x (B, N, D) after the cache's frames — features
    that have seen x, its history and the action into it (cond.action (B, A) / cond.action_mask (B,)), never the
    action taken after x (what a policy chooses). commit: also write x into the cache (x / v: that same pass).
    Next-frame mode: the pending frame is committed with cond's action and x becomes pending (always: x's pass must
    see its predecessor), then x's pass runs with its own (after-)action unknown, committing nothing."""
    c = cond if cond is not None else NO_FRAME_CONDITIONS
    ones = _ones(x, 1.0)
    d = ones / model.cfg.k_max
    if not predicts_next(model):
        return model.step(x, ones, d, c, cache=cache, commit=commit, return_hidden=True)[1]
    commit_frame(model, cache, x, c)
    return model.step(x, ones, d, c.text_only(), cache=cache, commit=False, return_hidden=True)[1]


def clip_hidden(model, latents: torch.Tensor, cond: Conditions | None = None) -> torch.Tensor:
    """Token outputs (B, T, S, W) of clean clips latents (B, T, N, D) with their conditions (cond.actions (B, T, A),
    actions[:, t] after frame t, cond.action_mask (B, T); text is not read): frame t's features have seen frames ≤ t
    and actions < t. x / v: one teacher-forced pass (`clean_hidden`); next-frame mode, whose frame-t pass embeds
    actions[:, t]: frame by frame through the cache (`frame_hidden`), so the features never carry the action they
    may be asked to predict."""
    c = Conditions(cond.actions, cond.action_mask) if cond is not None else NO_CONDITIONS
    if not predicts_next(model):
        return model.clean_hidden(latents, c.actions, c.action_mask)
    B, T = latents.shape[:2]
    cache = model.init_cache(B, device=latents.device)
    hs = []
    for t in range(T):
        a, m = c.action_into(t, B)
        hs.append(frame_hidden(model, cache, latents[:, t], FrameConditions(a, m)))
    return torch.stack(hs, 1)


def observe(
    model,
    context: torch.Tensor,
    cond: Conditions | None = None,
    tau_ctx: float = 1.0,
    cache=None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
):
    """Enter observed frames context (B, C, N, D) into a cache (a new one when None); returns the cache.

    cond: cond.actions (B, ≥C−1, A), actions[:, t] taken after context frame t (the first frame enters without an
    action); cond.text (B, ≥C, E) per frame or (B, E); its guidance scales are not read here (observe into the
    guided view, `guided(model, ...)`, to sample with guidance). noise (B, C, N, D) for re-noised context
    (tau_ctx < 1). Next-frame mode: frames 0..C−2 are committed with the actions after them and frame C−1 stays
    pending until the first predicted frame's action comes (`sample_frame`).
    """
    B, C = context.shape[:2]
    c = (cond if cond is not None else NO_CONDITIONS).known()
    if cache is None:
        cache = model.init_cache(B, device=context.device)  # dtype follows autocast
    for t in range(C):
        eps = None if noise is None else noise[:, t]
        commit_frame(model, cache, context[:, t], c.at(t, B), tau_ctx, eps, generator)
    return cache


def rollout(
    model,
    context: torch.Tensor,
    horizon: int,
    cond: Conditions | None = None,
    sampling: Sampling = Sampling(),
    *,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    cache=None,
) -> torch.Tensor:
    """Predict `horizon` frames after the observed `context` (B, C, N, D). Returns (B, H, N, D).

    cond: cond.actions (B or 1, C + H − 1, A) or None (action-free), cond.action_mask (B or 1, C + H − 1) bool;
    cond.text (B or 1, C + H, E) the text of every frame, or (B or 1, E) one sentence for all, cond.text_mask
    (B or 1, C + H) / (B or 1,) bool (None: present); cond.text_guidance / cond.action_guidance: classifier-free
    guidance scales (1: none; a given `cache` must then come from the same guided view, `guided(model, ...)`).
    sampling: K (a power of two ≤ the model's k_max, else a ValueError naming sample_steps), tau_ctx, grad.
    noise: (B or 1, H, N, D) fixed noise per generated frame (common random numbers for planning); otherwise drawn
    from `generator` (or the global RNG), which also draws the re-noising of context frames when tau_ctx < 1.
    cache: an already observed history (then `context` is only used for shapes and to position the actions).
    A next-frame model (model.prediction "next") ignores K, noise and tau_ctx: frame C + h is its deterministic
    prediction from the frames before it (with a given cache, the one `observe` left pending).
    """
    B, C, N, D = context.shape
    c = (cond if cond is not None else NO_CONDITIONS).known()  # given actions are known actions
    model = guided(model, c.text_guidance, c.action_guidance)
    if c.text is not None and c.text.dim() == 3 and c.text.shape[1] < C + horizon:
        raise ValueError(
            f"rollout: text has {c.text.shape[1]} frames, needs C + H = {C + horizon} (or give one "
            f"sentence embedding per sample, (B, E))"
        )
    check_sample_steps(sampling.steps, model.cfg.k_max)
    if c.actions is not None and c.actions.shape[1] < C + horizon - 1:
        raise ValueError(
            f"rollout: actions has {c.actions.shape[1]} steps, needs C + H − 1 = {C + horizon - 1} "
            f"(context {C}, horizon {horizon})"
        )
    if noise is not None and (noise.shape[1] < horizon or noise.shape[2:] != (N, D)):
        raise ValueError(f"rollout: noise must be (B or 1, {horizon}, {N}, {D}), got {tuple(noise.shape)}")
    with contextlib.nullcontext() if sampling.grad else torch.no_grad():
        if cache is None:
            cache = observe(model, context, c, sampling.tau_ctx, generator=generator)
        B_out = max(B, cache.batch_size // getattr(model, "branches", 1))  # an expanded cache: many candidates
        frames = []
        for h in range(horizon):
            fc = c.at(C + h, B_out)
            if noise is not None:
                eps = noise[:, h]
            else:  # a generator must live on context.device
                eps = torch.randn((B_out, N, D), generator=generator, device=context.device, dtype=context.dtype)
            x = sample_frame(model, cache, sampling.steps, eps, fc, batch=B_out)
            frames.append(x)
            if h < horizon - 1:  # the last frame is never attended to
                commit_frame(model, cache, x, fc, sampling.tau_ctx, generator=generator)
    return torch.stack(frames, dim=1)
