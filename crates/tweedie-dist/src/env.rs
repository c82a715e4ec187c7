//! Who this process is: torchrun's variables, or the same values given explicitly.

use crate::DistError;
use std::time::Duration;

/// Timeout of every collective and of the rendezvous unless `TWEEDIE_DIST_TIMEOUT` (seconds)
/// says otherwise. c10d's own default (30 min) would leave a job hung for half an hour.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// One rank's place in the job, as torchrun describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank, 0 ≤ rank < world_size (`RANK`).
    pub rank: usize,
    /// Number of processes in the job (`WORLD_SIZE`).
    pub world_size: usize,
    /// Rank on this node (`LOCAL_RANK`): picks the CUDA device.
    pub local_rank: usize,
    /// Address of the TCPStore (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of the TCPStore (`MASTER_PORT`).
    pub master_port: u16,
    /// Whether this process runs the store: rank 0, unless torchrun's agent runs it
    /// (`TORCHELASTIC_USE_AGENT_STORE=True`).
    pub serve_store: bool,
    /// Timeout of the rendezvous and of every collective (`TWEEDIE_DIST_TIMEOUT`, seconds).
    pub timeout: Duration,
}

impl DistEnv {
    /// Explicit arguments: rank 0 serves the store.
    pub fn new(
        rank: usize,
        world_size: usize,
        master_addr: &str,
        master_port: u16,
        timeout: Duration,
    ) -> Result<Self, DistError> {
        let env = Self {
            rank,
            world_size,
            local_rank: rank,
            master_addr: master_addr.to_string(),
            master_port,
            serve_store: rank == 0,
            timeout,
        };
        env.validate()?;
        Ok(env)
    }

    /// torchrun's environment, or `None` when `WORLD_SIZE` is unset (a plain single process).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`from_env`](Self::from_env), reading variables through `get` (testable).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let world_size: usize = parse("WORLD_SIZE", &world)?;
        let rank = match get("RANK") {
            Some(v) => parse("RANK", &v)?,
            None => return Err(missing("RANK")),
        };
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => parse("LOCAL_RANK", &v)?,
            None => rank,
        };
        let master_addr = get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".to_string());
        let master_port = match get("MASTER_PORT") {
            Some(v) => parse("MASTER_PORT", &v)?,
            None => return Err(missing("MASTER_PORT")),
        };
        let agent = get("TORCHELASTIC_USE_AGENT_STORE")
            .map(|v| v.eq_ignore_ascii_case("true") || v == "1")
            .unwrap_or(false);
        let timeout = match get("TWEEDIE_DIST_TIMEOUT") {
            Some(v) => {
                let secs: f64 = v.trim().parse().map_err(|_| DistError::Env {
                    var: "TWEEDIE_DIST_TIMEOUT",
                    value: v.clone(),
                    reason: "expected seconds, e.g. 60".into(),
                })?;
                if !(secs.is_finite() && secs > 0.0) {
                    return Err(DistError::Env {
                        var: "TWEEDIE_DIST_TIMEOUT",
                        value: v,
                        reason: "must be a positive number of seconds".into(),
                    });
                }
                Duration::from_secs_f64(secs)
            }
            None => DEFAULT_TIMEOUT,
        };
        let env = Self {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            serve_store: rank == 0 && !agent,
            timeout,
        };
        env.validate()?;
        Ok(Some(env))
    }

    fn validate(&self) -> Result<(), DistError> {
        if self.world_size == 0 {
            return Err(DistError::Env {
                var: "WORLD_SIZE",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        if self.rank >= self.world_size {
            return Err(DistError::Env {
                var: "RANK",
                value: self.rank.to_string(),
                reason: format!("must be below WORLD_SIZE={}", self.world_size),
            });
        }
        if self.master_addr.is_empty() {
            return Err(missing("MASTER_ADDR"));
        }
        Ok(())
    }
}

fn missing(var: &'static str) -> DistError {
    DistError::Env {
        var,
        value: String::new(),
        reason: "not set (WORLD_SIZE is, so this process was launched as one rank of several)"
            .into(),
    }
}

fn parse<T: std::str::FromStr>(var: &'static str, v: &str) -> Result<T, DistError> {
    v.trim().parse().map_err(|_| DistError::Env {
        var,
        value: v.to_string(),
        reason: "expected a non-negative integer".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn torchrun_variables() {
        let env = DistEnv::from_lookup(lookup(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "2"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TWEEDIE_DIST_TIMEOUT", "2.5"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((env.rank, env.world_size, env.local_rank), (2, 4, 0));
        assert_eq!(env.master_addr, "10.0.0.1");
        assert_eq!(env.master_port, 29500);
        assert!(!env.serve_store);
        assert_eq!(env.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn rank_zero_serves_unless_agent_does() {
        let base = [("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_PORT", "1234")];
        let env = DistEnv::from_lookup(lookup(&base)).unwrap().unwrap();
        assert!(env.serve_store);
        assert_eq!(env.timeout, DEFAULT_TIMEOUT);
        let mut agent = base.to_vec();
        agent.push(("TORCHELASTIC_USE_AGENT_STORE", "True"));
        assert!(
            !DistEnv::from_lookup(lookup(&agent))
                .unwrap()
                .unwrap()
                .serve_store
        );
    }

    #[test]
    fn no_world_size_means_single_process() {
        assert_eq!(
            DistEnv::from_lookup(lookup(&[("RANK", "3")])).unwrap(),
            None
        );
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = DistEnv::from_lookup(lookup(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "2"),
            ("MASTER_PORT", "1"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("RANK=\"2\""), "{err}");
        let err = DistEnv::from_lookup(lookup(&[("WORLD_SIZE", "two")])).unwrap_err();
        assert!(err.to_string().contains("WORLD_SIZE"), "{err}");
        let err = DistEnv::from_lookup(lookup(&[("WORLD_SIZE", "2"), ("RANK", "0")])).unwrap_err();
        assert!(err.to_string().contains("MASTER_PORT"), "{err}");
        let err = DistEnv::from_lookup(lookup(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_PORT", "1"),
            ("TWEEDIE_DIST_TIMEOUT", "-1"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("TWEEDIE_DIST_TIMEOUT"), "{err}");
    }
}
