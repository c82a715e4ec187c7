//! Noise-level densities p(σ̃) and loss weights λ(σ̃) for training.
