"""Evaluation (paper 3.2): every model on the held-out test patients for the 15 combinations
of modalities (``evaluate``), which runs count (``runs``), and the report: the paper's
tables and its numbers beside ours (``tables``, ``paper_numbers``), figures
(``figures``), training curves (``curves``), the paper's claims as paired tests
(``claims``, ``claims_report``), all written by ``report``. ``score_folder``:
``urn-evaluate``, any folder of label maps scored against a folder of ground truths.

May import ``urn_jax.inference`` and every layer below it; never the experiments.
"""
