"""DINA: Dual-Tower Image-Neural Alignment in JAX/Flax."""
