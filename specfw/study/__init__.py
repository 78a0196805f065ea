"""Study tools: the measurements behind the paper's tables and this project's figures.

- :mod:`~specfw.study.datasets`: the bundled and packaged prompt sets (``specfw eval --dataset``).
- :mod:`~specfw.study.eval`: the drafter × condition × dataset sweep (``specfw eval``), one record per run.
- :mod:`~specfw.study.records`: the record format; :mod:`~specfw.study.analysis`: OLS, break-even, buckets;
  :mod:`~specfw.study.report`: the paper's tables and plots (``specfw eval report``).
- :mod:`~specfw.study.fidelity`: model-free translator fidelity (``specfw fidelity``).
- :mod:`~specfw.study.bench`: cost ratios r and c (``specfw bench costs``); :mod:`~specfw.study.tune`: priors
  for ``adaptive`` (``specfw tune``); :mod:`~specfw.study.repetition`: how much of an output repeats itself.
"""
