//! Residual MLP denoiser backbone for low-dimensional data, with the U-Net's noise embedding.

use tch::{nn, Tensor};

use crate::config::MlpConfig;
use crate::error::Result;
use crate::layers::{LabelEmbedding, Linear, NoiseEmbedding, INIT_ZERO};
use crate::network::Network;

#[derive(Debug)]
struct Block {
    lin0: Linear,
    affine: Linear,
    lin1: Linear,
}

/// F(x; c_noise) = out(SiLU(h_L)), h_{i+1} = h_i + W₁ᵢ·drop(SiLU(W₀ᵢ·SiLU(h_i) + Aᵢ·emb)),
/// h₀ = W_in·x, emb = SiLU(L₁(SiLU(L₀(e(c_noise) + label term)))) as in SongUNet's mapping.
#[derive(Debug)]
pub struct Mlp {
    cfg: MlpConfig,
    map_noise: NoiseEmbedding,
    map_label: Option<LabelEmbedding>,
    map_layer0: Linear,
    map_layer1: Linear,
    in_proj: Linear,
    blocks: Vec<Block>,
    out_proj: Linear,
}

impl Mlp {
    /// Builds the MLP under `p`, validating `cfg` first.
    pub fn new(p: &nn::Path, cfg: &MlpConfig) -> Result<Self> {
        cfg.validate()?;
        let (n, e, h) = (cfg.noise_channels, cfg.emb_channels, cfg.hidden);
        let pb = p / "blocks";
        let blocks = (0..cfg.num_blocks)
            .map(|i| {
                let q = &pb / i;
                Block {
                    lin0: Linear::new(&(&q / "lin0"), h, h, true, 1.0),
                    affine: Linear::new(&(&q / "affine"), e, h, true, 1.0),
                    lin1: Linear::new(&(&q / "lin1"), h, h, true, INIT_ZERO),
                }
            })
            .collect();
        Ok(Mlp {
            cfg: cfg.clone(),
            map_noise: NoiseEmbedding::new(&(p / "map_noise"), cfg.embedding, n),
            map_label: LabelEmbedding::new(p, cfg.label_dim, n, cfg.label_dropout),
            map_layer0: Linear::new(&(p / "map_layer0"), n, e, true, 1.0),
            map_layer1: Linear::new(&(p / "map_layer1"), e, e, true, 1.0),
            in_proj: Linear::new(&(p / "in_proj"), cfg.dim, h, true, 1.0),
            blocks,
            out_proj: Linear::new(&(p / "out_proj"), h, cfg.out_width(), true, INIT_ZERO),
        })
    }

    /// The configuration the network was built from.
    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }
}

impl Network for Mlp {
    fn forward(
        &self,
        x: &Tensor,
        c_noise: &Tensor,
        class_labels: Option<&Tensor>,
        _augment_labels: Option<&Tensor>,
        train: bool,
    ) -> Tensor {
        let shape = x.size();
        let batch = shape[0];
        let x2 = x.reshape([batch, -1]);
        let mut emb = self.map_noise.forward(c_noise).to_kind(x.kind());
        if let Some(map_label) = &self.map_label {
            emb = emb + map_label.forward(class_labels, x, train);
        }
        let emb = self
            .map_layer1
            .forward(&self.map_layer0.forward(&emb).silu())
            .silu();
        let mut h = self.in_proj.forward(&x2);
        for b in &self.blocks {
            let u = (b.lin0.forward(&h.silu()) + b.affine.forward(&emb)).silu();
            h = h + b.lin1.forward(&u.dropout(self.cfg.dropout, train));
        }
        // Extra outputs (learned variance) widen the first feature axis: [B, d] → [B, out].
        let mut out_shape = shape.clone();
        if shape.len() > 1 {
            out_shape[1] *= (self.cfg.out_width() / self.cfg.dim) as i64;
        }
        self.out_proj
            .forward(&h.silu())
            .reshape(out_shape.as_slice())
    }
}
