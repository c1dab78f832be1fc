"""Quantized weights: one block format (:mod:`pi2lab.quant.format`, NumPy only, shared with the
flash layout) and the products that compute with it (:mod:`pi2lab.quant.ops`, JAX)."""
