//! tweedie-train
