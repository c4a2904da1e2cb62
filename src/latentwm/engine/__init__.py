"""What every trainer shares and every consumer of a trained run reads: the loop core (non-finite steps, EMA,
autocast, the LR schedule, resume; `loop.py`), checkpoints (save, verify, load, export, sharded; `checkpoint.py`,
`state_file.py`, `export_file.py`, `sharded.py`), the pairing of a model with its data (`pairing.py`) and run logs
(`logging.py`). Planning, RL and the report load models through it without importing the trainers."""
