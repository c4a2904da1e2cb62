"""The dynamics trainer's sync-free non-finite policy: NaN steps are skipped on the device (fused AdamW's found_inf,
gated EMA), counted when the loop reads them (log rows, evaluations, checkpoints), and the run stops beyond the
budget before it saves — naming the last good checkpoint, whose weights are finite."""

import pytest
import torch

from latentwm.config import get_preset
from latentwm.data.sources.synthetic import MovingBlobClips
from latentwm.engine import checkpoint as ckpt
from latentwm.engine.loop import EmaUpdate, NonFiniteGuard, TrainingDiverged, optimizer_step
from latentwm.train.trainer import Trainer


class Poisoned(MovingBlobClips):
    steps: tuple = ()
    batch: int = 4

    def __getitem__(self, k):
        s = super().__getitem__(k)
        if k // self.batch in self.steps:
            s.latents[0, 0, 0] = float("nan")
        return s


def test_a_deferred_stop_comes_at_the_next_read_and_never_saves_after_it(tmp_path):
    cfg = get_preset("tiny").replace(
        train__out_dir=str(tmp_path),
        train__steps=8,
        train__log_every=4,
        train__ckpt_every=4,
        train__eval_every=1000,
        train__max_nonfinite=1,
        data__batch_size=4,
    )
    m = cfg.model
    data = Poisoned(grid=m.latent_grid, dim=m.latent_dim, frames=cfg.data.clip_len, seed=0)
    data.steps = (2, 5)  # one NaN step in each 4-step window: the second one crosses the budget at step 8
    with pytest.raises(TrainingDiverged, match=r"2 non-finite steps .*train.max_nonfinite = 1.*step_00000004"):
        Trainer(cfg, data, None, device="cpu").fit()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["step_00000004"]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "checkpoints"))
    assert all(torch.isfinite(v).all() for k in ("model", "ema") for v in state[k].values())


def test_a_skipped_fused_step_leaves_weights_moments_step_count_and_ema_untouched():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = torch.nn.Linear(3, 2).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, fused=True)
    guard = NonFiniteGuard("t", budget=5)
    model(torch.ones(1, 3)).sum().backward()
    optimizer_step(opt, model.parameters(), 1.0, guard, 0, ema=EmaUpdate(ema, model, 0.5))  # a good step
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in ema.state_dict().items()}
    moments = {id(p): (s["exp_avg"].clone(), s["step"].clone()) for p, s in opt.state.items()}
    opt.zero_grad()
    (model(torch.ones(1, 3)).sum() * float("nan")).backward()
    optimizer_step(opt, model.parameters(), 1.0, guard, 1, ema=EmaUpdate(ema, model, 0.5))
    assert guard.count == 0  # not read yet: no host sync in the step
    guard.flush(1)
    assert guard.count == 1
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for k, v in ema.state_dict().items():
        assert torch.equal(v, ema_before[k])
    for p, s in opt.state.items():
        assert torch.equal(s["exp_avg"], moments[id(p)][0]) and torch.equal(s["step"], moments[id(p)][1])
