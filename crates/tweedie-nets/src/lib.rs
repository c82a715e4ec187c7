//! tweedie-nets
