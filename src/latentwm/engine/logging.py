"""Run logs: TensorBoard by default, Weights & Biases when installed and asked for, and a `metrics.jsonl` file.

The JSONL file is what reports plot from (no TensorBoard parsing needed); only rank 0 logs. A resumed run calls
`truncate_after(step)` first, so rows the interrupted run logged past its last checkpoint are not repeated.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np

from latentwm.io.files import atomic_write


class RunLogger:
    def __init__(
        self,
        out_dir: str | Path,
        enabled: bool = True,
        wandb: bool = False,
        config: dict | None = None,
        tensorboard: bool = True,
    ):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self._tb = self._wandb = None
        self._jsonl = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.out_dir / "metrics.jsonl", "a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.out_dir / "tb"))
            except ImportError:
                warnings.warn("tensorboard is not installed: logging to metrics.jsonl only", stacklevel=2)
        if wandb:
            try:
                import wandb as wb

                self._wandb = wb.init(project="latentwm", dir=str(self.out_dir), config=config or {}, resume="allow")
            except ImportError:
                warnings.warn(
                    "--train.wandb was set but wandb is not installed (pip install 'latentwm[wandb]'); "
                    "logging to TensorBoard only",
                    stacklevel=2,
                )

    def scalars(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        if not self.enabled:
            return
        values = {f"{prefix}{k}": float(v) for k, v in values.items()}
        self._jsonl.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in values.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(values, step=step)

    def truncate_after(self, step: int) -> int:
        """Drop the rows of metrics.jsonl logged past `step` (and a torn last line), keeping the others verbatim;
        returns how many rows were dropped. The file is rewritten atomically (a temp file renamed over it), and
        TensorBoard events past `step` are purged when its writer reopens. For a run resumed at `step`."""
        if not self.enabled:
            return 0
        path = self.out_dir / "metrics.jsonl"
        self._jsonl.close()
        keep, dropped = [], 0
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # torn by a crash
            if int(row.get("step", 0)) <= step:
                keep.append(line + "\n")
            else:
                dropped += 1
        atomic_write(path, "".join(keep))
        self._jsonl = open(path, "a")
        if self._tb is not None:  # a new writer whose purge_step hides the old events past `step`
            from torch.utils.tensorboard import SummaryWriter

            self._tb.close()
            self._tb = SummaryWriter(str(self.out_dir / "tb"), purge_step=step + 1)
        return dropped

    def image(self, step: int, tag: str, image: np.ndarray) -> None:
        """image: (H, W, 3) uint8."""
        if not self.enabled:
            return
        if self._tb is not None:
            self._tb.add_image(tag, image, step, dataformats="HWC")
        if self._wandb is not None:
            import wandb as wb

            self._wandb.log({tag: wb.Image(image)}, step=step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def read_metrics(path: str | Path) -> list[dict]:
    """All records of a metrics.jsonl (a torn last line from a crash is ignored)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
