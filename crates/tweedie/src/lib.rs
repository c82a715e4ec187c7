//! tweedie
