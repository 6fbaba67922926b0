"""Training loops of metadt: the world model and the one Meta-DT trainer.

- :mod:`metadt.train.loop`: the one training skeleton both trainers run through
  (run directory, resume, checkpoints, logging, progress, DDP, final files);
- :mod:`metadt.train.world_model`: :func:`train_world_model` (its report is
  :mod:`metadt.evaluate.world_model_report`);
- :mod:`metadt.train.meta_dt`: :func:`train_meta_dt` (Meta-DT and every baseline);
- :mod:`metadt.train.columns`: per-step z / world-model errors over a whole store;
- :mod:`metadt.train.prompts`: :func:`attach_step_errors` and prompt specs;
- :mod:`metadt.train.checkpoint`: atomic checkpoints, RNG state, batch seeds;
- :mod:`metadt.train.run`: :func:`load_run`, :func:`load_world_model`;
- :mod:`metadt.train.metrics`: JSONL (+ TensorBoard) metrics and PNG curves.
"""
