//! Safe import of NVlabs/edm network pickles (`edm-cifar10-32x32-cond-vp.pkl`, …) into tweedie
//! checkpoints, without executing anything from the file.
//!
//! EDM snapshots are pickles of persistent objects whose metadata embeds Python source that
//! `pickle.load` would `exec`. This reader never runs it: [`pickle`] builds a data tree and accepts
//! only an allowlist of global names (each merely recorded), [`torch`] reads the nested legacy
//! `torch.save` storage blobs with every size, offset and stride checked against the bytes
//! present, and [`edm`] translates the class names and `_init_kwargs` (EDM's defaults filled in)
//! into a [`crate::ModelConfig`].

pub mod edm;
pub mod pickle;
pub mod torch;
pub mod value;

use std::path::{Path, PathBuf};

pub use edm::{import_edm, read_edm, EdmImport, ImportReport};

/// Errors of the EDM importer; each names the file (or nested blob) and what was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The input could not be read or the output written.
    #[error("cannot access `{}`: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    /// The pickle stream is malformed or truncated.
    #[error("{what}: malformed pickle at byte {offset}: {reason}")]
    Pickle {
        what: String,
        offset: usize,
        reason: String,
    },
    /// The pickle names a global outside the allowlist (it would run code on `pickle.load`).
    #[error("{what}: refused global `{name}` at byte {offset}: not in the allowlist of data-only names (loading it with pickle would execute code)")]
    ForbiddenGlobal {
        what: String,
        offset: usize,
        name: String,
    },
    /// A storage blob or tensor view is inconsistent with its data.
    #[error("{what}: bad tensor data: {reason}")]
    Tensor { what: String, reason: String },
    /// The data tree is not shaped like an EDM snapshot or network.
    #[error("{what}: {reason}")]
    Structure { what: String, reason: String },
    /// An EDM feature tweedie's networks or preconditioning do not support.
    #[error("{what}: not supported by tweedie: {reason}")]
    Unsupported { what: String, reason: String },
    /// Building, loading or saving the tweedie model failed.
    #[error(transparent)]
    Nets(#[from] crate::NetsError),
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> ImportError {
    ImportError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}
