"""Fused Triton kernels with PyTorch fallbacks (top-level `kernels/` links here)."""
