//! `tch::Tensor` states (through core's `TchTensor` wrapper).
