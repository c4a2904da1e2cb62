"""Ablation sweeps (`latentwm sweep`): a base preset + named variants (generic dotted-key config overrides) × seeds,
each run an ordinary `latentwm train` run followed by the same `latentwm eval`s, run locally one after another or
emitted as one command per run for a scheduler, and aggregated into tables, plots and one JSON.

spec.py: the sweep file and overrides → every run's validated config; measure.py: what one run measures;
runner.py: run / resume / --only / --emit-commands; aggregate.py + plots.py: --collect.

It sits beside planning, on top of train (the train entry, locks, logs) and eval: it needs nothing above them.
"""
