//! Property test of the untrusted-checkpoint checks: a network config read from a file's
//! metadata, with any of its sizes replaced by any number or list, is refused with an error or
//! passes `check_untrusted` and then validates or fails cleanly. Never a panic or an overflow,
//! and never a passing config whose parameter count exceeds the budget or the stored values.

use proptest::prelude::*;
use serde_json::{json, Value};
use tweedie_nets::budget::{check_untrusted, sampling_bytes_per_sample, MAX_PARAMETERS};
use tweedie_nets::NetConfig;

const PRESETS: &[&str] = &[
    "ddpmpp-tiny",
    "ddpmpp-small",
    "mlp-2d",
    "adm-small",
    "ncsnpp-tiny",
];
const KEYS: &[&str] = &[
    "resolution",
    "width",
    "in_channels",
    "out_channels",
    "label_dim",
    "augment_dim",
    "model_channels",
    "channel_mult",
    "channel_mult_emb",
    "channel_mult_noise",
    "num_blocks",
    "attn_resolutions",
    "resample_filter",
    "dropout",
    "dim",
    "hidden",
    "noise_channels",
    "emb_channels",
    "out_dim",
];

/// A size of any magnitude: small ones that build, powers of two near every limit, 2⁶⁴ − 1.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..9,
        (0u32..64).prop_map(|k| 1u64 << k),
        Just(u64::MAX),
        any::<u64>()
    ]
}

fn value() -> impl Strategy<Value = Value> {
    // Mostly values of the right JSON type, so that most cases reach the checks.
    prop_oneof![
        6 => size().prop_map(|v| json!(v)),
        3 => prop::collection::vec(size(), 0..20).prop_map(|v| json!(v)),
        1 => any::<f64>().prop_map(|v| json!(v)),
        1 => Just(json!(null)),
        1 => Just(json!(-1)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_network_sizes_are_refused_or_within_budget(
        preset in prop::sample::select(PRESETS),
        edits in prop::collection::vec((prop::sample::select(KEYS), value()), 1..4),
        stored in prop_oneof![Just(None), any::<u64>().prop_map(|v| Some(u128::from(v)))],
    ) {
        let mut v = serde_json::to_value(NetConfig::preset(preset).unwrap()).unwrap();
        // The config is {"type": "<kind>", fields…}, as in a checkpoint's metadata.
        let Some(fields) = v.as_object_mut() else { return Ok(()) };
        for (k, val) in edits {
            fields.insert(k.to_string(), val);
        }
        let Ok(net) = serde_json::from_value::<NetConfig>(v) else { return Ok(()) };
        let _ = sampling_bytes_per_sample(&net);
        if let Ok(need) = check_untrusted(&net, stored) {
            prop_assert!(need <= MAX_PARAMETERS);
            prop_assert!(stored.is_none_or(|s| need <= s));
            let _ = match &net {
                NetConfig::Unet(c) => c.validate(),
                NetConfig::Mlp(c) => c.validate(),
                NetConfig::Dhariwal(c) => c.validate(),
            };
        }
    }
}
