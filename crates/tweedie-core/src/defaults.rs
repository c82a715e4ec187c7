//! Published defaults, each stated once: every config type, preset and formulation in
//! tweedie takes its default from here (the `serde` default functions in [`de`] return these
//! same constants), so a value can be checked against its paper in one place.

/// Declares each default once as a `pub const` and as a same-named function in [`de`] (serde's
/// `default = "…"` wants a function path).
macro_rules! defaults {
    ($( $(#[$doc:meta])* $name:ident / $f:ident : $t:ty = $v:expr; )*) => {
        $( $(#[$doc])* pub const $name: $t = $v; )*

        /// The constants above as functions, for `#[serde(default = "…")]`.
        pub mod de {
            $(
                #[doc = concat!("[`", stringify!($name), "`](super::", stringify!($name), ")")]
                #[inline]
                pub fn $f() -> $t {
                    super::$name
                }
            )*
        }
    };
}

defaults! {
    /// σ̃_min of the EDM process and sampling grid (Karras et al. 2022, Table 1).
    EDM_SIGMA_MIN / edm_sigma_min: f64 = 0.002;
    /// σ̃_max of the EDM process and sampling grid (Karras et al. 2022, Table 1).
    EDM_SIGMA_MAX / edm_sigma_max: f64 = 80.0;
    /// ρ of the EDM time grid (Karras et al. 2022, eq. 5).
    EDM_RHO / edm_rho: f64 = 7.0;
    /// σ_data of EDM preconditioning and loss weight (Karras et al. 2022, Table 1).
    SIGMA_DATA / sigma_data: f64 = 0.5;
    /// P_mean of EDM's log-normal training density of σ̃ (Karras et al. 2022, Table 1).
    EDM_P_MEAN / edm_p_mean: f64 = -1.2;
    /// P_std of EDM's log-normal training density of σ̃ (Karras et al. 2022, Table 1).
    EDM_P_STD / edm_p_std: f64 = 1.2;
    /// β_min of the linear VP process (Song et al. 2021; Karras et al. 2022, Table 1).
    VP_BETA_MIN / vp_beta_min: f64 = 0.1;
    /// β_d = β_max − β_min of the linear VP process (Song et al. 2021; Karras et al. 2022, Table 1).
    VP_BETA_D / vp_beta_d: f64 = 19.9;
    /// ε_t, the smallest training time of VP (Song et al. 2021; Karras et al. 2022, Table 1).
    VP_EPS_T / vp_eps_t: f64 = 1e-5;
    /// ε_s, the last time of VP's sampling grid (Karras et al. 2022, Table 1).
    VP_EPS_S / vp_eps_s: f64 = 1e-3;
    /// M of VP preconditioning, c_noise = (M − 1)·t (Karras et al. 2022, Table 1).
    VP_M / vp_m: f64 = 1000.0;
    /// σ̃_min of the VE process, grid and training density (Song et al. 2021; Karras et al. 2022, Table 1).
    VE_SIGMA_MIN / ve_sigma_min: f64 = 0.02;
    /// σ̃_max of the VE process, grid and training density (Song et al. 2021; Karras et al. 2022, Table 1).
    VE_SIGMA_MAX / ve_sigma_max: f64 = 100.0;
    /// C₁ of iDDPM's u-grid (Nichol & Dhariwal 2021 via Karras et al. 2022, Table 1).
    IDDPM_C1 / iddpm_c1: f64 = 0.001;
    /// C₂ of iDDPM's u-grid, the cosine schedule's offset s (Karras et al. 2022, Table 1).
    IDDPM_C2 / iddpm_c2: f64 = 0.008;
    /// M, the length of iDDPM's u-grid (Karras et al. 2022, Table 1).
    IDDPM_M / iddpm_m: usize = 1000;
    /// j₀, the first u-grid index of iDDPM's sampling grid (Karras et al. 2022, Table 1).
    IDDPM_J0 / iddpm_j0: usize = 8;
    /// λ of iDDPM's hybrid loss L_simple + λ·L_vlb (Nichol & Dhariwal 2021, §3.1).
    IDDPM_VLB_WEIGHT / iddpm_vlb_weight: f64 = 0.001;
    /// Offset s of the cosine schedule ᾱ(t) ∝ cos²((t + s)/(1 + s)·π/2) (Nichol & Dhariwal 2021, eq. 17).
    COSINE_S / cosine_s: f64 = 0.008;
    /// Cap on β of the discretised cosine schedule (Nichol & Dhariwal 2021, §3.2).
    COSINE_MAX_BETA / cosine_max_beta: f64 = 0.999;
    /// N, the length of a DDPM β table (Ho et al. 2020).
    DDPM_STEPS / ddpm_steps: usize = 1000;
    /// β_1 of DDPM's linear table (Ho et al. 2020, §4).
    DDPM_LINEAR_BETA_START / ddpm_linear_beta_start: f64 = 1e-4;
    /// β_N of DDPM's linear table (Ho et al. 2020, §4).
    DDPM_LINEAR_BETA_END / ddpm_linear_beta_end: f64 = 0.02;
    /// β_1 of Stable Diffusion's scaled-linear table (Rombach et al. 2022).
    SCALED_LINEAR_BETA_START / scaled_linear_beta_start: f64 = 0.00085;
    /// β_N of Stable Diffusion's scaled-linear table (Rombach et al. 2022).
    SCALED_LINEAR_BETA_END / scaled_linear_beta_end: f64 = 0.012;
    /// γ of min-SNR and soft-min-SNR loss weights (Hang et al. 2023).
    MIN_SNR_GAMMA / min_snr_gamma: f64 = 5.0;
    /// ρ of k-diffusion's poly-exponential grid as tweedie defaults it (more steps at low noise).
    POLY_RHO / poly_rho: f64 = 2.0;
    /// Std s of SD3's logit-normal time density t = sigmoid(m + s·z) (Esser et al. 2024, §3.1).
    LOGIT_NORMAL_STD / logit_normal_std: f64 = 1.0;
    /// Upper end t_max of rectified flow's time interval (Liu et al. 2022).
    FLOW_T_MAX / flow_t_max: f64 = 1.0;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The published values, written out against the papers' tables: a change to a constant
    /// above must be a change here too.
    #[test]
    fn constants_are_the_published_values() {
        // Karras et al. 2022, Table 1 and eq. 5.
        assert_eq!(
            (EDM_SIGMA_MIN, EDM_SIGMA_MAX, EDM_RHO, SIGMA_DATA),
            (0.002, 80.0, 7.0, 0.5)
        );
        assert_eq!((EDM_P_MEAN, EDM_P_STD), (-1.2, 1.2));
        assert_eq!(
            (VP_BETA_MIN, VP_BETA_D, VP_EPS_T, VP_EPS_S, VP_M),
            (0.1, 19.9, 1e-5, 1e-3, 1000.0)
        );
        assert_eq!((VE_SIGMA_MIN, VE_SIGMA_MAX), (0.02, 100.0));
        assert_eq!(
            (IDDPM_C1, IDDPM_C2, IDDPM_M, IDDPM_J0),
            (0.001, 0.008, 1000, 8)
        );
        // Nichol & Dhariwal 2021.
        assert_eq!(
            (COSINE_S, COSINE_MAX_BETA, IDDPM_VLB_WEIGHT),
            (0.008, 0.999, 0.001)
        );
        // Ho et al. 2020; Rombach et al. 2022.
        assert_eq!(
            (DDPM_STEPS, DDPM_LINEAR_BETA_START, DDPM_LINEAR_BETA_END),
            (1000, 1e-4, 0.02)
        );
        assert_eq!(
            (SCALED_LINEAR_BETA_START, SCALED_LINEAR_BETA_END),
            (0.00085, 0.012)
        );
        assert_eq!(MIN_SNR_GAMMA, 5.0);
        // The serde functions return the constants.
        assert_eq!(de::edm_sigma_max(), EDM_SIGMA_MAX);
        assert_eq!(de::iddpm_m(), IDDPM_M);
    }
}
