"""Evaluation: scoring models into tidy metric rows, one module per concern, named evaluators over them.

- :mod:`.rows`: the tidy rows (``METRIC_COLUMNS``), ``MetricLog`` (rows with their per-point results),
  reading and writing them;
- :mod:`.clean`: the one batch loop of clean accuracy over a split's ``BatchSource``;
- :mod:`.adversarial`: robust and union accuracy under the attack plans, whole or in shards;
- :mod:`.shifts`: distribution shifts as evaluation sets (corruption families, ``data.shifts`` parts);
- :mod:`.mce`: ImageNet-C's mCE and relative mCE from rows (torch-free);
- :mod:`.registry`: the evaluators by name (clean, corrupted, adversarial, shifts, mce), each a config
  and one ``run``;
- :mod:`.rerun`: the rerun keys of a model's evaluation (torch-free).

Nothing is imported here, so that the torch-free modules (:mod:`.mce`) stay torch-free.
"""
