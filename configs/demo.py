"""A short demonstration of urn_jax on a toy problem (about a minute on a laptop CPU).

    python launch.py --config=configs/demo.py --workdir=runs/demo
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.job = "demo"
  config.seed = 0
  config.size = 32
  config.num_slices = 256
  config.features = (8, 16, 32)
  config.batch_size = 4
  config.learning_rate = 1e-3
  config.steps = 300
  return config
