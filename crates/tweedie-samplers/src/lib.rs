//! tweedie-samplers
