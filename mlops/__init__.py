"""Flight-delay MLOps platform: shared contract, data preparation, config and CLI."""

import os

__version__ = "0.1.0"

# TensorFlow 2.16 imports Keras 3 when it is imported, unless told that tf.keras is Keras 2
# (tf_keras). Everything here that uses TensorFlow is Keras 2: TFT requires it and sets this
# variable itself, but only once TensorFlow is already loaded, so every step and server process
# spent 5-8 s importing a Keras 3 it never used. Every process that imports TensorFlow here
# imports this package first (the contract), so setting it here, before any TensorFlow import,
# is enough. A user's explicit setting wins.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
