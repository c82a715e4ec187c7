//! Small dense linear algebra (Cholesky, solves, log-determinants) for the mixture.
