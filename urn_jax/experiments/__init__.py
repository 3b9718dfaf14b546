"""Experiments built from the layers below: the paper's study end to end (``study``), the
probes of the unified representation (``probes``) and a demonstration on toy data
(``demo``).

May import every layer of urn_jax; nothing imports them but ``urn_jax.jobs``.
"""
