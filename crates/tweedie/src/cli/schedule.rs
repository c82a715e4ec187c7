//! `tweedie schedule`: print a timer's grid (i, t, σ̃) as a sampler would use it.
//!
//! Timer and process parameters are given as `KEY=VALUE` with TOML values and read into
//! the same serde types as the TOML configs, so every timer of tweedie-core is available
//! here with its defaults and its validation (errors name the key and the value).

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tweedie::core::{ProcessKind, Timer, TimerKind};

/// `tweedie schedule --timer edm --steps 18 rho=7 sigma_max=80`
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    tweedie schedule --timer edm --steps 18\n  \
    tweedie schedule --timer edm --steps 10 rho=3 sigma_max=40\n  \
    tweedie schedule --timer vp_linear --steps 8 --json\n  \
    tweedie schedule --timer uniform_time --steps 10 --shift 3\n  \
    tweedie schedule --timer ddim --steps 10 spacing=trailing")]
pub struct Args {
    /// Timer: edm, vp_linear, ve_geometric, iddpm, ddim, exponential, uniform_logsnr,
    /// uniform_time (TOML `type` of a timer config).
    #[arg(long)]
    pub timer: String,

    /// Number of sampler steps (the grid has steps + 1 points).
    #[arg(long)]
    pub steps: usize,

    /// Timer parameters as KEY=VALUE, VALUE in TOML syntax (e.g. rho=7, spacing="trailing").
    #[arg(value_name = "KEY=VALUE")]
    pub params: Vec<String>,

    /// Process that maps σ̃ ↔ t: vp, vp_cosine, ve, edm, flow, ddpm. Default: the timer's own
    /// (edm/exponential/iddpm → edm, vp_linear → vp, ve_geometric → ve, ddim → ddpm,
    /// uniform_logsnr → vp, uniform_time → flow).
    #[arg(long)]
    pub process: Option<String>,

    /// Process parameters as KEY=VALUE (repeatable), e.g. --process-param beta_d=19.9.
    #[arg(long = "process-param", value_name = "KEY=VALUE")]
    pub process_params: Vec<String>,

    /// Shift the timer for flow models (σ̃ ↦ shift·σ̃ in the flow parametrisation).
    #[arg(long)]
    pub shift: Option<f64>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The JSON output: the resolved configs (defaults filled in) and the grid.
#[derive(Debug, Serialize)]
struct Output<'a> {
    timer: &'a TimerKind,
    process: &'a ProcessKind,
    steps: usize,
    t: &'a [f64],
    /// σ̃ with ∞ (flow at t = 1) written as the string "inf": JSON has no infinity, and
    /// serde_json would write `null`.
    sigma_tilde: Vec<serde_json::Value>,
}

/// A JSON number, or "inf" / "-inf" / "nan" for values JSON cannot hold.
fn json_f64(v: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(v) {
        Some(n) => serde_json::Value::Number(n),
        None if v.is_nan() => "nan".into(),
        None if v > 0.0 => "inf".into(),
        None => "-inf".into(),
    }
}

pub fn run(args: Args) -> Result<()> {
    let mut timer: TimerKind = from_key_values(&args.timer, &args.params)
        .with_context(|| format!("timer `{}`", args.timer))?;
    if let Some(shift) = args.shift {
        timer = TimerKind::shifted(shift, timer);
    }
    let process_name = match &args.process {
        Some(name) => name.clone(),
        None => default_process(&args.timer).to_string(),
    };
    let process: ProcessKind = from_key_values(&process_name, &args.process_params)
        .with_context(|| format!("process `{process_name}`"))?;
    let built = process
        .try_build()
        .with_context(|| format!("process `{process_name}`"))?;
    let grid = timer
        .grid(built.as_ref(), args.steps)
        .with_context(|| format!("timer `{}` with {} steps", args.timer, args.steps))?;

    if args.json {
        let out = Output {
            timer: &timer,
            process: &process,
            steps: args.steps,
            t: &grid.t,
            sigma_tilde: grid.sigma_tilde.iter().map(|&v| json_f64(v)).collect(),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("# timer:   {}", toml_inline(&timer)?);
        println!("# process: {}", toml_inline(&process)?);
        println!("{:>5}  {:>22}  {:>22}", "i", "t", "sigma_tilde");
        for (i, (t, s)) in grid.t.iter().zip(&grid.sigma_tilde).enumerate() {
            println!("{i:>5}  {t:>22.12e}  {s:>22.12e}");
        }
    }
    Ok(())
}

/// The process a timer is written for, when the user names none.
fn default_process(timer: &str) -> &'static str {
    match timer {
        "vp_linear" => "vp",
        "ve_geometric" => "ve",
        "ddim" => "ddpm",
        // Uniform log-SNR needs finite σ̃ at both ends, which VP has and flow has not.
        "uniform_logsnr" => "vp",
        "uniform_time" => "flow",
        _ => "edm",
    }
}

/// Reads a serde `type`-tagged config from `type = name` plus `KEY=VALUE` pairs (`tweedie
/// schedule`'s parameters, `tweedie sample --timer-param / --process-param`).
pub(super) fn from_key_values<T: serde::de::DeserializeOwned>(
    name: &str,
    pairs: &[String],
) -> Result<T> {
    let mut table = toml::Table::new();
    table.insert("type".into(), toml::Value::String(name.to_string()));
    for pair in pairs {
        let (key, value) = parse_pair(pair)?;
        if key == "type" {
            bail!("`type` is set by --timer / --process, not as a parameter");
        }
        if table.insert(key.clone(), value).is_some() {
            bail!("parameter `{key}` given twice");
        }
    }
    T::deserialize(toml::Value::Table(table)).map_err(|e| anyhow::anyhow!("{}", e.message()))
}

/// `key=value` with a TOML value; a bare word that is not TOML (e.g. `trailing`) is a string.
fn parse_pair(pair: &str) -> Result<(String, toml::Value)> {
    let (key, raw) = pair
        .split_once('=')
        .with_context(|| format!("parameter `{pair}` is not KEY=VALUE"))?;
    let key = key.trim();
    if key.is_empty() {
        bail!("parameter `{pair}` has an empty key");
    }
    let raw = raw.trim();
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").context("TOML value vanished")?,
        Err(_)
            if raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            toml::Value::String(raw.to_string())
        }
        Err(e) => bail!(
            "value of `{key}` is not a TOML value: {raw} ({})",
            e.message()
        ),
    };
    Ok((key.to_string(), value))
}

/// One-line TOML rendering of a config, for the table header.
fn toml_inline<T: Serialize>(value: &T) -> Result<String> {
    let v = toml::Value::try_from(value)?;
    Ok(inline(&v))
}

fn inline(v: &toml::Value) -> String {
    match v {
        toml::Value::Table(t) => {
            // `type` first: it says what the other keys mean.
            let mut items: Vec<String> = t
                .get("type")
                .map(|v| format!("type = {v}"))
                .into_iter()
                .collect();
            items.extend(
                t.iter()
                    .filter(|(k, _)| *k != "type")
                    .map(|(k, v)| format!("{k} = {}", inline(v))),
            );
            format!("{{ {} }}", items.join(", "))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_as_toml_with_bare_word_strings() {
        assert_eq!(
            parse_pair("rho=7").unwrap(),
            ("rho".into(), toml::Value::Integer(7))
        );
        assert_eq!(
            parse_pair("rho = 7.5").unwrap(),
            ("rho".into(), toml::Value::Float(7.5))
        );
        assert_eq!(
            parse_pair("spacing=trailing").unwrap(),
            ("spacing".into(), toml::Value::String("trailing".into()))
        );
        assert_eq!(
            parse_pair("spacing=\"trailing\"").unwrap(),
            ("spacing".into(), toml::Value::String("trailing".into()))
        );
        assert!(parse_pair("rho").is_err());
        assert!(parse_pair("=3").is_err());
        assert!(parse_pair("rho=1 2").is_err());
    }

    #[test]
    fn edm_timer_gets_defaults_and_overrides() {
        let t: TimerKind = from_key_values("edm", &[]).unwrap();
        assert_eq!(t, TimerKind::edm());
        let t: TimerKind =
            from_key_values("edm", &["rho=3".into(), "sigma_max=40.0".into()]).unwrap();
        assert_eq!(
            t,
            TimerKind::Edm {
                sigma_min: 0.002,
                sigma_max: 40.0,
                rho: 3.0
            }
        );
    }

    #[test]
    fn unknown_keys_and_timers_are_named_in_errors() {
        let err = from_key_values::<TimerKind>("edm", &["rhoo=3".into()]).unwrap_err();
        assert!(format!("{err}").contains("rhoo"), "{err}");
        let err = from_key_values::<TimerKind>("nope", &[]).unwrap_err();
        assert!(format!("{err}").contains("nope"), "{err}");
        assert!(from_key_values::<TimerKind>("edm", &["type=ve".into()]).is_err());
        assert!(from_key_values::<TimerKind>("edm", &["rho=1".into(), "rho=2".into()]).is_err());
    }

    /// The published EDM 18-step grid (Karras et al. 2022): 80, 57.586, 40.786 … 0.00753, 0.002, 0.
    #[test]
    fn edm_grid_through_the_cli_path() {
        let timer: TimerKind = from_key_values("edm", &[]).unwrap();
        let process: ProcessKind = from_key_values(default_process("edm"), &[]).unwrap();
        let grid = timer
            .grid(process.try_build().unwrap().as_ref(), 18)
            .unwrap();
        assert_eq!(grid.sigma_tilde.len(), 19);
        let s = &grid.sigma_tilde;
        assert!((s[0] - 80.0).abs() < 1e-9);
        assert!((s[1] - 57.586).abs() < 1e-3, "{}", s[1]);
        assert!((s[2] - 40.786).abs() < 1e-3, "{}", s[2]);
        assert!((s[16] - 0.00753).abs() < 1e-5, "{}", s[16]);
        assert!((s[17] - 0.002).abs() < 1e-12);
        assert_eq!(s[18], 0.0);
    }
}
