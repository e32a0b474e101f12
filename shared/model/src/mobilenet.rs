//! MobileNetV2 (torchvision layout and parameter names, so `mobilenet_v2.safetensors`
//! loads into it) split at the retraining depth: blocks below it live in a frozen var store
//! and run in eval mode without gradients; the blocks from it on and the new classifier live
//! in the trained var store. Traced TorchScript cannot be used here: its batch-norm stays in
//! eval mode.

use aerial_shared::messages::Retraining;
use std::path::Path;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

/// Optimizer parameter group of the new classifier; the trained feature blocks are group 0,
/// so fine-tuning can give the pretrained layers a smaller learning rate than the new head.
pub const HEAD_GROUP: usize = 1;

/// Feature blocks: `features.0` (stem) .. `features.18` (1×1 conv to 1280).
const BLOCKS: usize = 19;

/// (expansion, output channels, repeats, first stride) of the inverted residual stages.
const STAGES: [(i64, i64, i64, i64); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// First trained feature block for a retraining depth. `fully_connected` retrains the
/// classifier plus the last inverted residual block (`features.17`, 160→320) and the final
/// 1×1 convolution (`features.18`, 320→1280): the layers that make the pooled features.
pub fn first_trained_block(depth: Retraining) -> usize {
    match depth {
        Retraining::All => 0,
        Retraining::FullyConnected => 17,
        Retraining::LastOnly => BLOCKS,
    }
}

/// conv + batch-norm + ReLU6, named `<p>.0` / `<p>.1` as in torchvision.
fn conv_bn(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    ks: i64,
    stride: i64,
    groups: i64,
) -> nn::SequentialT {
    let cfg = nn::ConvConfig {
        stride,
        padding: (ks - 1) / 2,
        groups,
        bias: false,
        ..Default::default()
    };
    nn::seq_t()
        .add(nn::conv2d(&p / 0, c_in, c_out, ks, cfg))
        .add(nn::batch_norm2d(&p / 1, c_out, Default::default()))
        .add_fn(|x| x.clamp(0.0, 6.0))
}

/// Inverted residual block `<p>.conv.*`.
fn inverted(p: nn::Path, c_in: i64, c_out: i64, stride: i64, expand: i64) -> impl ModuleT {
    let hidden = c_in * expand;
    let q = &p / "conv";
    let mut seq = nn::seq_t();
    let mut i = 0;
    if expand != 1 {
        seq = seq.add(conv_bn(&q / i, c_in, hidden, 1, 1, 1));
        i += 1;
    }
    seq = seq
        .add(conv_bn(&q / i, hidden, hidden, 3, stride, hidden))
        .add(nn::conv2d(&q / (i + 1), hidden, c_out, 1, nn::no_bias()))
        .add(nn::batch_norm2d(&q / (i + 2), c_out, Default::default()));
    let residual = stride == 1 && c_in == c_out;
    nn::func_t(move |x, train| {
        let y = x.apply_t(&seq, train);
        if residual {
            x + y
        } else {
            y
        }
    })
}

/// The split network.
pub struct Net {
    /// Blocks below the retraining depth (never updated).
    pub frozen: nn::VarStore,
    /// Trained blocks and the classifier: what the optimizer updates and checkpoints hold.
    pub trained: nn::VarStore,
    blocks: Vec<Box<dyn ModuleT>>,
    first_trained: usize,
    head: nn::Linear,
}

impl Net {
    /// Builds the network for `n_classes` at `depth` and loads the ImageNet weights from
    /// `weights` (the new classifier starts from a random init).
    pub fn new(
        weights: &Path,
        n_classes: usize,
        depth: Retraining,
        device: Device,
    ) -> Result<Self, tch::TchError> {
        let mut frozen = nn::VarStore::new(device);
        let mut trained = nn::VarStore::new(device);
        let first_trained = first_trained_block(depth);
        let root = |i: usize| -> nn::Path {
            let vs = if i < first_trained { &frozen } else { &trained };
            vs.root() / "features" / i
        };
        let mut blocks: Vec<Box<dyn ModuleT>> = Vec::with_capacity(BLOCKS);
        blocks.push(Box::new(conv_bn(root(0), 3, 32, 3, 2, 1)));
        let mut c_in = 32;
        for (expand, c_out, repeats, stride) in STAGES {
            for r in 0..repeats {
                let i = blocks.len();
                let s = if r == 0 { stride } else { 1 };
                blocks.push(Box::new(inverted(root(i), c_in, c_out, s, expand)));
                c_in = c_out;
            }
        }
        blocks.push(Box::new(conv_bn(root(BLOCKS - 1), c_in, 1280, 1, 1, 1)));
        // not named classifier.1: the ImageNet head in the file must not load into it
        let head = nn::linear(
            trained.root().set_group(HEAD_GROUP) / "head",
            1280,
            n_classes as i64,
            Default::default(),
        );
        frozen.load_partial(weights)?;
        let missing = trained.load_partial(weights)?;
        debug_assert!(
            missing.iter().all(|m| m.starts_with("head.")),
            "{missing:?}"
        );
        frozen.freeze();
        Ok(Self {
            frozen,
            trained,
            blocks,
            first_trained,
            head,
        })
    }

    /// Loads fine-tuned weights (a saved [`Net::trained`] store) over the ImageNet ones.
    pub fn load_trained(&mut self, path: &Path) -> Result<(), tch::TchError> {
        self.trained.load(path)
    }

    /// Logits `[n, classes]` of a normalised batch `[n, 3, 224, 224]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        for (i, b) in self.blocks.iter().enumerate() {
            h = if i < self.first_trained {
                tch::no_grad(|| b.forward_t(&h, false))
            } else {
                b.forward_t(&h, train)
            };
        }
        h.mean_dim(Some([2i64, 3].as_slice()), false, Kind::Float)
            .dropout(0.2, train)
            .apply(&self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models/mobilenet_v2")
    }

    /// With the ImageNet weights, the pooled features equal the exported featurizer's.
    #[test]
    fn loads_imagenet_weights_into_torchvision_names() {
        let net = Net::new(
            &dir().join("mobilenet_v2.safetensors"),
            7,
            Retraining::All,
            Device::Cpu,
        )
        .unwrap();
        let x = Tensor::read_npy(dir().join("ref_input_chelsea_coffee.npy")).unwrap();
        let want = Tensor::read_npy(dir().join("ref_features.npy")).unwrap();
        let mut h = x;
        for b in &net.blocks {
            h = tch::no_grad(|| b.forward_t(&h, false));
        }
        let got = h.mean_dim(Some([2i64, 3].as_slice()), false, Kind::Float);
        let diff = (got - want).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "max diff {diff}");
    }

    #[test]
    fn depth_decides_what_is_trained() {
        let w = dir().join("mobilenet_v2.safetensors");
        let count = |d| {
            let n = Net::new(&w, 3, d, Device::Cpu).unwrap();
            (
                n.trained.trainable_variables().len(),
                n.frozen.trainable_variables().len(),
            )
        };
        let (last, _) = count(Retraining::LastOnly);
        let (fc, _) = count(Retraining::FullyConnected);
        let (all, frozen_all) = count(Retraining::All);
        assert_eq!(last, 2, "head weight and bias only");
        assert!(fc > last && all > fc, "{last} < {fc} < {all}");
        assert_eq!(frozen_all, 0);
    }
}
