//! Run directories that two runs cannot share: created exclusively, locked for the life of a
//! run (an advisory `flock` on `run.lock`), and cleaned of temp files left by killed writers.
//!
//! Why a lock file and not the directory's existence: a resumed run reuses its directory, so
//! only a lock held by a live process tells a second `--resume` (or a second writer) apart from
//! a run that merely stopped. The kernel releases a `flock` when its holder dies, even by
//! SIGKILL, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// File names inside a run directory.
pub mod files {
    pub const CONFIG: &str = "config.toml";
    pub const MODEL: &str = "model.safetensors";
    pub const METRICS: &str = "metrics.jsonl";
    pub const LOSS_PLOT: &str = "loss.png";
    pub const SAMPLES: &str = "samples.png";
    pub const SAMPLES_DIR: &str = "samples";
    /// Samples in physical units, for NetCDF data.
    pub const SAMPLES_NC: &str = "samples.nc";
    pub const REPORT: &str = "report.md";
    pub const EVAL: &str = "eval.json";
    pub const DENOISING_PLOT: &str = "denoising.png";
}

/// File name of the lock inside a run directory; it holds the pid of the last holder.
pub const LOCK_FILE: &str = "run.lock";

/// Most suffixes `-2`, `-3`, … tried when runs launched in the same second pick one name.
const MAX_SUFFIX: u32 = 10_000;

/// An exclusive advisory lock on a run directory, held until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run_dir` without waiting; another live holder is an error naming its pid.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                TrainError::Other(format!(
                    "run directory {} is not writable ({}: {e})",
                    run_dir.display(),
                    path.display()
                ))
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = text.trim().parse::<u32>().ok();
                return Err(TrainError::RunLocked {
                    run_dir: run_dir.to_path_buf(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(TrainError::io(&path, e)),
        }
        // Truncating in place (not replacing the file) keeps the inode others lock on.
        let write_pid = |f: &mut File| -> std::io::Result<()> {
            f.set_len(0)?;
            f.rewind()?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        write_pid(&mut file).map_err(|e| TrainError::io(&path, e))?;
        Ok(RunLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates a fresh run directory and locks it. With `unique`, a name already taken becomes
/// `NAME-2`, `NAME-3`, … (runs launched in the same second); without, an existing directory is
/// accepted only when empty. Nothing is ever written into a directory that holds anything.
pub fn create_fresh(requested: &Path, unique: bool) -> Result<(PathBuf, RunLock)> {
    if let Some(parent) = requested.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    }
    let dir = if unique {
        let mut n = 1u32;
        loop {
            let cand = if n == 1 {
                requested.to_path_buf()
            } else {
                let mut s = requested.as_os_str().to_owned();
                s.push(format!("-{n}"));
                PathBuf::from(s)
            };
            match std::fs::create_dir(&cand) {
                Ok(()) => break cand,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < MAX_SUFFIX => n += 1,
                Err(e) => return Err(TrainError::io(&cand, e)),
            }
        }
    } else {
        match std::fs::create_dir(requested) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !requested.is_dir() {
                    return Err(TrainError::RunDirTaken {
                        run_dir: requested.to_path_buf(),
                        reason: "it exists and is not a directory".into(),
                    });
                }
                refuse_if_used(requested, &[])?;
            }
            Err(e) => return Err(TrainError::io(requested, e)),
        }
        requested.to_path_buf()
    };
    let lock = RunLock::acquire(&dir)?;
    // Another process may have taken the same empty directory between our check and our lock.
    refuse_if_used(&dir, &[LOCK_FILE])?;
    Ok((dir, lock))
}

/// An error unless `dir` holds nothing but the names in `allowed`.
fn refuse_if_used(dir: &Path, allowed: &[&str]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::io(dir, e))?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !allowed.contains(&n.as_str()))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    names.truncate(5);
    Err(TrainError::RunDirTaken {
        run_dir: dir.to_path_buf(),
        reason: format!(
            "it is not empty (it holds {}); a fresh run never writes into a used directory: \
             resume it with --resume, or choose another --out",
            names.join(", ")
        ),
    })
}

/// Whether process `pid` is alive (on Unix: `kill(pid, 0)` succeeds or is refused by permission).
fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(p) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists; nothing is sent.
        let r = unsafe { libc::kill(p, 0) };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        // Without a cheap check, assume alive: a stale file costs disk, a wrong removal a file.
        let _ = pid;
        true
    }
}

/// The pid of an atomic writer's temp file name `.NAME.tmp-PID`.
pub fn temp_file_pid(name: &str) -> Option<u32> {
    let (head, pid) = name.rsplit_once(".tmp-")?;
    if !head.starts_with('.') || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes `.NAME.tmp-PID` files of dead processes from `dir` and its `samples/` folder (a kill
/// during an atomic write leaves one); returns the paths removed. Call while holding the lock.
pub fn remove_stale_temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let own = std::process::id();
    for d in [dir.to_path_buf(), dir.join(files::SAMPLES_DIR)] {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = temp_file_pid(&name) else {
                continue;
            };
            if pid != own && !process_alive(pid) && std::fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_file_names_parse_only_in_the_writers_form() {
        assert_eq!(
            temp_file_pid(".train_state.safetensors.tmp-4242"),
            Some(4242)
        );
        assert_eq!(temp_file_pid("train_state.safetensors.tmp-4242"), None);
        assert_eq!(temp_file_pid(".x.tmp-"), None);
        assert_eq!(temp_file_pid(".x.tmp-12a"), None);
        assert_eq!(temp_file_pid("model.safetensors"), None);
    }
}
