"""Training (paper 2.2-2.4): modality dropout, the losses, the optimizer and its schedules,
the pure train and validation steps, the recipe a config describes, the loop
(``loop.train_and_evaluate``) with its checkpoints, validation, logs and clean stop, and
the checks of a training config.

May import ``urn_jax.model``, ``urn_jax.data`` and the shared leaves; never inference,
evaluation or the experiments.
"""
