//! The hash-pinned lock files of `requirements/` (made by `requirements/lock.py`) and the pip
//! options every install from them uses.
//!
//! A lock lists every package its install adds, transitive ones included, at an exact version
//! with the sha256 of each wheel of that release, so pip runs with `--require-hashes --no-deps`:
//! nothing is resolved at install time and a file whose hash is not listed is refused.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where the locks and their inputs live, relative to the workspace root.
pub const DIR: &str = "requirements";

/// The options that make pip install exactly a lock: hashes required (and checked), no
/// dependency resolution, wheels only (a source build would fetch unhashed build tools).
pub const PIP_LOCKED: [&str; 3] = ["--require-hashes", "--no-deps", "--only-binary=:all:"];

/// The platform the locks' dependency sets were resolved for (torch's CUDA wheel pulls
/// Linux-only packages); elsewhere the set-up installs the `==` pins of `setup.in` unhashed.
pub const LOCKED_PLATFORM: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));

/// `requirements/<name>.txt` under `root`.
pub fn path(root: &Path, name: &str) -> PathBuf {
    root.join(DIR).join(format!("{name}.txt"))
}

/// One requirement of a lock: `name==version` and its wheel hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub version: String,
    pub hashes: Vec<String>,
}

/// Parses a lock: pip's requirement-file syntax restricted to what lock.py writes (comments,
/// `name==version` entries continued with `\` onto `--hash=sha256:<64 hex>` lines). Anything
/// else, an entry without a hash or a malformed hash is an error naming the line.
pub fn parse(text: &str) -> Result<Vec<Pin>> {
    let mut pins: Vec<Pin> = Vec::new();
    let mut continued = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        let (body, continues) = match line.strip_suffix('\\') {
            Some(b) => (b.trim(), true),
            None => (line, false),
        };
        if body.is_empty() || body.starts_with('#') {
            if continued && !body.is_empty() {
                bail!("line {n}: a comment inside a continued entry");
            }
            continued = continues;
            continue;
        }
        if let Some(hash) = body.strip_prefix("--hash=") {
            let Some(last) = pins.last_mut().filter(|_| continued) else {
                bail!("line {n}: a hash outside an entry");
            };
            let hex = hash.strip_prefix("sha256:").with_context(|| {
                format!("line {n}: `{hash}` is not a sha256 hash (sha256:<64 hex digits>)")
            })?;
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("line {n}: `{hex}` is not 64 hex digits");
            }
            last.hashes.push(hex.to_ascii_lowercase());
        } else {
            if continued {
                bail!("line {n}: `{body}` follows a `\\` continuation");
            }
            let (name, version) = body
                .split_once("==")
                .filter(|(name, version)| {
                    !name.is_empty()
                        && !version.is_empty()
                        && !version.contains(|c: char| c.is_whitespace() || c == ';' || c == '=')
                })
                .with_context(|| format!("line {n}: `{body}` is not `name==version`"))?;
            pins.push(Pin {
                name: canonical(name),
                version: version.to_string(),
                hashes: Vec::new(),
            });
        }
        continued = continues;
    }
    if let Some(p) = pins.iter().find(|p| p.hashes.is_empty()) {
        bail!(
            "{}=={} has no --hash (pip's --require-hashes refuses it)",
            p.name,
            p.version
        );
    }
    Ok(pins)
}

/// Reads and parses `requirements/<name>.txt`.
pub fn read(root: &Path, name: &str) -> Result<Vec<Pin>> {
    let path = path(root, name);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the lock file {}", path.display()))?;
    parse(&text).with_context(|| format!("lock file {}", path.display()))
}

/// PEP 503 name normalisation: lower case, runs of `-`, `_`, `.` as one `-`.
pub fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.trim().chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// `pip <verb> --disable-pip-version-check --no-input --progress-bar off` plus the locked
/// options and `-r <lock>`, as owned strings for [`crate::run::logged`].
pub fn pip_args(verb: &str, lock: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-m",
        "pip",
        verb,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
    ]
    .iter()
    .chain(PIP_LOCKED.iter())
    .map(|s| s.to_string())
    .collect();
    args.push("-r".to_string());
    args.push(lock.to_string_lossy().into_owned());
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    /// The `name==version` requirements of an input file (`requirements/<name>.in`), comments
    /// and `# no-deps` marks dropped.
    fn input_pins(root: &Path, name: &str) -> Result<Vec<(String, String)>> {
        let path = root.join(DIR).join(format!("{name}.in"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        text.lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.split_once("==")
                    .map(|(n, v)| (canonical(n), v.trim().to_string()))
                    .with_context(|| format!("{}: `{l}` is not `name==version`", path.display()))
            })
            .collect()
    }

    /// Every lock the set-up and the benchmark install from, with the lock it is installed on
    /// top of (whose packages it must not repeat).
    const LOCKS: [(&str, Option<&str>); 6] = [
        ("setup", None),
        ("cuda-headers", Some("setup")),
        ("digits", None),
        ("bench-kdiffusion", Some("setup")),
        ("bench-diffusers", Some("setup")),
        ("bench-diffuse", None),
    ];

    #[test]
    fn parses_what_lock_py_writes() {
        let text = format!(
            "# header\nTorch_Thing==2.13.0 \\\n    --hash=sha256:{H} \\\n    --hash=sha256:{}\n    # note\nb==1 \\\n    --hash=sha256:{H}\n",
            H.to_uppercase()
        );
        let pins = parse(&text).unwrap();
        assert_eq!(
            pins,
            vec![
                Pin {
                    name: "torch-thing".into(),
                    version: "2.13.0".into(),
                    hashes: vec![H.into(), H.into()]
                },
                Pin {
                    name: "b".into(),
                    version: "1".into(),
                    hashes: vec![H.into()]
                }
            ]
        );
    }

    #[test]
    fn refuses_entries_pip_would_not_check() {
        let no_hash = parse("a==1\n").unwrap_err().to_string();
        assert!(no_hash.contains("a==1 has no --hash"), "{no_hash}");
        let range = parse(&format!("a>=1 \\\n  --hash=sha256:{H}\n")).unwrap_err();
        assert!(range.to_string().contains("`a>=1` is not `name==version`"));
        let md5 = parse(&format!("a==1 \\\n  --hash=md5:{H}\n")).unwrap_err();
        assert!(md5.to_string().contains("is not a sha256 hash"), "{md5}");
        let short = parse("a==1 \\\n  --hash=sha256:abc\n").unwrap_err();
        assert!(short.to_string().contains("`abc` is not 64 hex digits"));
        let stray = parse(&format!("--hash=sha256:{H}\n")).unwrap_err();
        assert!(stray.to_string().contains("a hash outside an entry"));
    }

    #[test]
    fn committed_locks_are_complete_and_match_their_inputs() {
        let root = root();
        for (name, below) in LOCKS {
            let pins = read(&root, name).unwrap();
            assert!(!pins.is_empty(), "{name}.txt is empty");
            // Every pin of the input is in the lock at the same version: an edited .in
            // without a fresh `python3 requirements/lock.py` fails here.
            for (pkg, version) in input_pins(&root, name).unwrap() {
                let locked = pins.iter().find(|p| p.name == pkg);
                assert_eq!(
                    locked.map(|p| p.version.as_str()),
                    Some(version.as_str()),
                    "{name}.in pins {pkg}=={version}; {name}.txt differs (run requirements/lock.py)"
                );
            }
            let mut names: Vec<&str> = pins.iter().map(|p| p.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), pins.len(), "{name}.txt lists a package twice");
            if let Some(below) = below {
                let base = read(&root, below).unwrap();
                for p in &pins {
                    assert!(
                        base.iter().all(|b| b.name != p.name),
                        "{name}.txt repeats {} of {below}.txt",
                        p.name
                    );
                }
            }
        }
    }

    #[test]
    fn setup_lock_pins_the_torch_tch_is_written_against() {
        let pins = read(&root(), "setup").unwrap();
        let torch = pins.iter().find(|p| p.name == "torch").unwrap();
        assert_eq!(torch.version, crate::setup::TORCH_VERSION);
        // torch's CUDA wheel (PyPI's default on Linux x86_64) and its runtime libraries.
        assert!(pins.iter().any(|p| p.name == "nvidia-cuda-runtime"));
    }

    #[test]
    fn canonical_names() {
        assert_eq!(canonical("Jinja2"), "jinja2");
        assert_eq!(canonical("typing_extensions"), "typing-extensions");
        assert_eq!(canonical("zope.interface"), "zope-interface");
        assert_eq!(canonical("a-_.b"), "a-b");
    }
}
