"""The paper's networks (sections 2.1 and 2.3): the U-Net, the modality encoders, the
fusion into the unified representation, the synthesis decoders, the URN and the baseline,
and the one place a job's config becomes a network (``build``).

Pure Flax modules and JAX functions; masks are arrays, so one compilation serves every
combination of modalities. May import the shared leaves (``urn_jax.errors``,
``modalities``, ``labels``, ``job_config``) and nothing else of urn_jax: never the data,
which knows nothing of networks either.
"""
