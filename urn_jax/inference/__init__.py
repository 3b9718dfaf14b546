"""Inference: trained models applied to whole volumes (``predict``: loading a work
directory's model, the one compiled forward pass, mapping the prediction back onto the
original grid) and the ``urn-segment`` command (``segment``).

May import ``urn_jax.training`` (its checkpoints), ``urn_jax.model``, ``urn_jax.data`` and
the shared leaves; never evaluation or the experiments.
"""
