"""daian-tf: DAIAN and DIN for trigger-induced recommendation, in Keras 3 on TensorFlow."""

__version__ = "0.1.0"
