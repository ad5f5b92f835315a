"""Scale-out: the scorer on a Ray cluster (Ray Data), same Predictor, same output contract.

``ray`` is an optional extra (``pip install 'fracture-batch[ray]'``) imported lazily:
importing this package (or ``ray.engine``) never imports ray.
"""
