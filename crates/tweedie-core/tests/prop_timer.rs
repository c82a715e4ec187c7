//! Property tests of the process and timer parameter validation: any TOML table of any keys
//! and values either fails to parse, is refused with an error, or yields a grid that keeps the
//! grid contract. Never a panic, whatever the numbers (NaN, ±∞, 0, negative, 2⁶⁴ − 1).

use proptest::prelude::*;
use tweedie_core::{ProcessKind, Timer, TimerKind};

/// Each process and timer type with its keys, so that most generated tables parse and reach
/// validation and the grid (unknown keys are refused by `deny_unknown_fields` at parse time).
const PROCESSES: &[(&str, &[&str])] = &[
    ("edm", &["sigma_min", "sigma_max"]),
    ("vp", &["beta_min", "beta_d", "eps_t"]),
    ("vp_cosine", &["s"]),
    ("ve", &["sigma_min", "sigma_max"]),
    ("flow", &["t_min", "t_max"]),
    ("ddpm", &["num_steps", "schedule"]),
];
const TIMERS: &[(&str, &[&str])] = &[
    ("edm", &["sigma_min", "sigma_max", "rho"]),
    ("vp_linear", &["eps_s"]),
    ("ve_geometric", &["sigma_min", "sigma_max"]),
    ("iddpm", &["c1", "c2", "m", "j0"]),
    ("ddim", &["spacing", "num_train_steps"]),
    ("exponential", &["sigma_min", "sigma_max"]),
    ("poly_exponential", &["sigma_min", "sigma_max", "rho"]),
    ("align_your_steps", &[]),
    ("uniform_logsnr", &["t_min", "t_max"]),
    ("uniform_time", &["t_max"]),
];

/// A value of the key's type: floats of every class for real parameters; for sizes, small
/// ones and ones the memory budget refuses (2⁴⁰ and up; sizes in between would build tables
/// of hundreds of MB, valid but slow); the string and table keys' choices.
fn value(key: &str) -> BoxedStrategy<String> {
    match key {
        "m" | "j0" | "num_train_steps" | "num_steps" => prop_oneof![
            0i64..1200,
            (40u32..63).prop_map(|k| 1i64 << k),
            Just(i64::MAX),
        ]
        .prop_map(|v| v.to_string())
        .boxed(),
        "spacing" => prop::sample::select(vec![
            "\"uniform\"",
            "\"quadratic\"",
            "\"trailing\"",
            "\"x\"",
        ])
        .prop_map(str::to_string)
        .boxed(),
        "schedule" => prop::sample::select(vec![
            "{ type = \"linear\" }",
            "{ type = \"cosine\" }",
            "{ type = \"linear\", beta_start = -1.0 }",
            "{ type = \"linear\", beta_start = 0.5, beta_end = 0.1 }",
            "{ type = \"nope\" }",
        ])
        .prop_map(str::to_string)
        .boxed(),
        _ => prop_oneof![
            any::<f64>().prop_map(|v| {
                if v.is_nan() {
                    "nan".to_string()
                } else if v.is_infinite() {
                    (if v > 0.0 { "inf" } else { "-inf" }).to_string()
                } else {
                    format!("{v:e}")
                }
            }),
            (-2.0f64..100.0).prop_map(|v| format!("{v:e}")),
            prop::sample::select(vec!["0.0", "-0.0", "1e-300", "1e300", "1.0", "0.5"])
                .prop_map(str::to_string),
        ]
        .boxed(),
    }
}

fn table(
    types: &'static [(&'static str, &'static [&'static str])],
) -> impl Strategy<Value = String> {
    prop::sample::select(types).prop_flat_map(|(name, keys)| {
        let kv: Vec<BoxedStrategy<Option<String>>> = keys
            .iter()
            .map(|&k| prop::option::of(value(k).prop_map(move |v| format!("{k} = {v}\n"))).boxed())
            .collect();
        kv.prop_map(move |lines| {
            let mut s = format!("type = \"{name}\"\n");
            s.extend(lines.into_iter().flatten());
            s
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_process_and_timer_parameters_give_a_valid_grid_or_an_error(
        p in table(PROCESSES),
        t in table(TIMERS),
        steps in prop_oneof![0usize..40, Just(usize::MAX), Just(1usize << 62)],
    ) {
        // Every generated table is of the right types: it must parse.
        let pk = toml::from_str::<ProcessKind>(&p);
        prop_assert!(pk.is_ok() || p.contains("\"x\"") || p.contains("nope"), "{p}: {pk:?}");
        let tk = toml::from_str::<TimerKind>(&t);
        prop_assert!(tk.is_ok() || t.contains("\"x\""), "{t}: {tk:?}");
        let (Ok(pk), Ok(tk)) = (pk, tk) else { return Ok(()) };
        if pk.validate().is_err() || tk.validate().is_err() {
            return Ok(());
        }
        let Ok(process) = pk.try_build() else { return Ok(()) };
        let _ = tk.check_process(&pk);
        if let Ok(g) = tk.grid(process.as_ref(), steps) {
            // The grid contract: steps + 1 points, t strictly decreasing to 0, σ̃ ≥ 0 and
            // non-increasing, nothing NaN.
            prop_assert_eq!(g.t.len(), steps + 1);
            prop_assert_eq!(g.sigma_tilde.len(), steps + 1);
            prop_assert_eq!(*g.t.last().unwrap(), 0.0);
            prop_assert!(g.t.windows(2).all(|w| w[0] > w[1]), "{:?}", g.t);
            prop_assert!(g.sigma_tilde.windows(2).all(|w| w[0] >= w[1]), "{:?}", g.sigma_tilde);
            prop_assert!(g.sigma_tilde.iter().all(|s| *s >= 0.0));
            let _ = tk.check_grid_range(process.as_ref(), &g);
        }
    }
}
