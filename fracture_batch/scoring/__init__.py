"""Scoring: discover inputs, decode, batch, predict, write Parquet rows; resumably, on either engine.

Public API: ``score(ScoreConfig)`` (this machine) and ``ray.engine.run_ray`` (a Ray
cluster), both returning a ``ScoreSummary``; ``Predictor`` for embedding the model in
another pipeline. Importing this package imports neither engine.
"""
