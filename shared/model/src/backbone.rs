//! The backbones and the inference workers that run them: torch modules stay on their worker
//! thread, the async runtime sends preprocessed batches and awaits the features.

use crate::frozen::{Frozen, FrozenError};
use aerial_shared::messages::Tta;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use tch::{Device, Kind, Tensor};
use tokio::sync::oneshot;

/// Backbones this build knows, with their feature size.
pub const BACKBONES: [(&str, usize); 2] = [("mobilenet_v2", 1280), ("efficientnet_lite0", 1280)];

/// Feature size of a known backbone.
pub fn feature_dim(name: &str) -> Option<usize> {
    BACKBONES.iter().find(|(n, _)| *n == name).map(|(_, d)| *d)
}

/// Path of a backbone's TorchScript featurizer.
pub fn featurizer_path(models: &Path, name: &str) -> PathBuf {
    models.join(name).join(format!("{name}_featurizer.pt"))
}

/// Inference failures.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// Not in [`BACKBONES`].
    #[error("unknown backbone {0:?}")]
    Unknown(String),
    /// Loading or running the module failed.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// Loading or running the frozen featurizer failed.
    #[error("torch: {0}")]
    Frozen(#[from] FrozenError),
    /// The inference workers are gone.
    #[error("inference workers stopped")]
    Stopped,
    /// Inputs or outputs of the wrong size (e.g. cached features of another width).
    #[error("{0}")]
    Shape(String),
    /// A run's trained weights do not load (corrupt, or for another network): no retry helps.
    #[error("fine-tuned model of run {run} does not load: {source}")]
    Unloadable {
        /// Run name.
        run: String,
        /// Torch's error.
        source: tch::TchError,
    },
}

impl InferError {
    /// Whether another try can never succeed (the message belongs in the DLQ at once).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            InferError::Unknown(_) | InferError::Shape(_) | InferError::Unloadable { .. }
        )
    }
}

/// Loads a featurizer on `device`, eval mode, frozen (BatchNorm folded into the convolutions).
pub fn load(models: &Path, name: &str, device: Device) -> Result<Frozen, InferError> {
    feature_dim(name).ok_or_else(|| InferError::Unknown(name.to_string()))?;
    Ok(Frozen::load(&featurizer_path(models, name), device)?)
}

/// Images per forward pass on CPU. A 32-image pass spills MobileNetV2's activations (up to
/// 154 MB) out of the caches: on one thread 8 at a time was ~5 % faster per image, and ~8 %
/// with two processes sharing the machine (BENCHMARKS.md). CUDA runs the whole batch.
pub const CPU_CHUNK: usize = 8;

/// Runs `module` on `n` preprocessed images (CHW floats, concatenated); returns `[n, dim]`,
/// each row averaged over the views `tta` asks for.
pub fn run(
    module: &Frozen,
    device: Device,
    input: &[f32],
    n: usize,
    tta: Tta,
) -> Result<Vec<f32>, InferError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let per_image = input.len() / n;
    let chunk = if device.is_cuda() { n } else { CPU_CHUNK };
    let mut out = Vec::new();
    for part in input.chunks(chunk * per_image) {
        let x = input_tensor(part, part.len() / per_image, device);
        let y = crate::views::mean_over(&x, tta, |v| module.forward(v))?;
        out.extend(output_vec(&y.to_kind(Kind::Float))?);
    }
    Ok(out)
}

/// Runs `module` on `n` preprocessed images (CHW floats, concatenated) under each of `tta`'s
/// views apart: one `[n, dim]` row-major feature block per view (the training side of
/// test-time augmentation, where every view is a sample of its own).
pub fn run_each_view(
    module: &Frozen,
    device: Device,
    input: &[f32],
    n: usize,
    tta: Tta,
) -> Result<Vec<Vec<f32>>, InferError> {
    let mut out = vec![Vec::new(); tta.views()];
    if n == 0 {
        return Ok(out);
    }
    let per_image = input.len() / n;
    let chunk = if device.is_cuda() { n } else { CPU_CHUNK };
    for part in input.chunks(chunk * per_image) {
        let x = input_tensor(part, part.len() / per_image, device);
        for (v, features) in out.iter_mut().enumerate() {
            let y = module.forward(&crate::views::view(&x, v))?;
            features.extend(output_vec(&y.to_kind(Kind::Float))?);
        }
    }
    Ok(out)
}

/// `n` preprocessed images (CHW floats, concatenated) as an `[n, 3, 224, 224]` tensor on `device`.
fn input_tensor(input: &[f32], n: usize, device: Device) -> Tensor {
    Tensor::from_slice(input)
        .view([n as i64, 3, 224, 224])
        .to_device(device)
}

/// A float output tensor, row-major, back on the CPU.
fn output_vec(y: &Tensor) -> Result<Vec<f32>, InferError> {
    let y = y.to_device(Device::Cpu).contiguous().view([-1]);
    Ok(Vec::<f32>::try_from(&y)?)
}

/// What to run on a batch.
enum Work {
    /// The backbone's features `[n, dim]`, averaged over the views.
    Features(String, Tta),
    /// A fine-tuned run's class probabilities `[n, classes]`.
    Finetuned(FinetunedModel),
}

/// A fine-tuned MobileNetV2 on disk, identified by its run.
#[derive(Debug, Clone)]
pub struct FinetunedModel {
    /// Run name (the cache key).
    pub run: String,
    /// The run's `finetuned.safetensors`, downloaded.
    pub weights: PathBuf,
    /// Number of labels.
    pub classes: usize,
    /// Retraining depth it was trained at (decides which weights the file holds).
    pub depth: aerial_shared::messages::Retraining,
    /// Views whose class probabilities are averaged.
    pub tta: Tta,
}

struct Request {
    work: Work,
    input: Vec<f32>,
    n: usize,
    reply: oneshot::Sender<Result<Vec<f32>, InferError>>,
}

/// Handle to the inference workers; cheap to clone.
#[derive(Clone)]
pub struct Inference {
    tx: mpsc::Sender<Request>,
}

impl Inference {
    /// Starts the inference workers. On CPU: `threads` workers of one torch thread each,
    /// every worker on its own batch, so no thread waits in lock-step for another that
    /// decoding, I/O or the broker on the same cores preempted (measured in BENCHMARKS.md);
    /// each worker loads its own copy of a model. With CUDA: one worker.
    pub fn spawn(
        models: PathBuf,
        threads: usize,
        on_load: impl Fn(f64) + Send + Sync + 'static,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Request>();
        let rx = Arc::new(Mutex::new(rx));
        let on_load: Arc<dyn Fn(f64) + Send + Sync> = Arc::new(on_load);
        let device = Device::cuda_if_available();
        let (workers, torch_threads) = if device.is_cuda() {
            (1, threads.max(1))
        } else {
            (threads.max(1), 1)
        };
        for i in 0..workers {
            let (rx, models, on_load) = (rx.clone(), models.clone(), on_load.clone());
            std::thread::Builder::new()
                .name(format!("inference-{i}"))
                .spawn(move || {
                    // torch's thread count is per calling thread under OpenMP
                    tch::set_num_threads(torch_threads as i32);
                    tracing::info!(
                        ?device,
                        worker = i,
                        torch_threads,
                        "inference worker started"
                    );
                    serve(&rx, &models, device, &*on_load);
                })
                .expect("spawning an inference worker");
        }
        Self { tx }
    }

    /// Features of `n` images with `backbone`, averaged over the views `tta` asks for.
    pub async fn features(
        &self,
        backbone: &str,
        tta: Tta,
        input: Vec<f32>,
        n: usize,
    ) -> Result<Vec<f32>, InferError> {
        self.submit(Work::Features(backbone.to_string(), tta), input, n)
            .await
    }

    /// Class probabilities `[n, classes]` (row-major) of `n` images with a fine-tuned run.
    pub async fn finetuned(
        &self,
        model: &FinetunedModel,
        input: Vec<f32>,
        n: usize,
    ) -> Result<Vec<f32>, InferError> {
        self.submit(Work::Finetuned(model.clone()), input, n).await
    }

    async fn submit(&self, work: Work, input: Vec<f32>, n: usize) -> Result<Vec<f32>, InferError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                work,
                input,
                n,
                reply,
            })
            .map_err(|_| InferError::Stopped)?;
        rx.await.map_err(|_| InferError::Stopped)?
    }
}

/// One worker's loop: takes the next request, loads its model on first use, replies.
fn serve(
    rx: &Mutex<mpsc::Receiver<Request>>,
    models: &Path,
    device: Device,
    on_load: &(dyn Fn(f64) + Send + Sync),
) {
    let mut cache: HashMap<String, Frozen> = HashMap::new();
    let mut tuned: HashMap<String, crate::mobilenet::Net> = HashMap::new();
    loop {
        // the lock is held only while waiting for the next request
        let req = match rx.lock().expect("no worker panics holding the lock").recv() {
            Ok(req) => req,
            Err(_) => return,
        };
        let result = (|| match &req.work {
            Work::Features(backbone, tta) => {
                if !cache.contains_key(backbone) {
                    let t = std::time::Instant::now();
                    let m = load(models, backbone, device)?;
                    on_load(t.elapsed().as_secs_f64());
                    tracing::info!(backbone = %backbone, secs = t.elapsed().as_secs_f64(), "backbone loaded");
                    cache.insert(backbone.clone(), m);
                }
                run(&cache[backbone], device, &req.input, req.n, *tta)
            }
            Work::Finetuned(f) => {
                if !tuned.contains_key(&f.run) {
                    let t = std::time::Instant::now();
                    let base = models.join("mobilenet_v2/mobilenet_v2.safetensors");
                    let mut net = crate::mobilenet::Net::new(&base, f.classes, f.depth, device)?;
                    net.load_trained(&f.weights)
                        .map_err(|source| InferError::Unloadable {
                            run: f.run.clone(),
                            source,
                        })?;
                    on_load(t.elapsed().as_secs_f64());
                    tracing::info!(run = %f.run, secs = t.elapsed().as_secs_f64(), "fine-tuned model loaded");
                    tuned.insert(f.run.clone(), net);
                }
                let x = input_tensor(&req.input, req.n, device);
                let net = &tuned[&f.run];
                let p = crate::views::mean_over(&x, f.tta, |v| {
                    Ok::<_, InferError>(
                        tch::no_grad(|| net.forward(v, false)).softmax(-1, Kind::Float),
                    )
                })?;
                output_vec(&p)
            }
        })();
        let _ = req.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn models() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models")
    }

    /// The service's load + run path reproduces the exporter's reference features.
    #[test]
    fn matches_reference_features_for_each_backbone() {
        for (name, dim) in BACKBONES {
            let dir = models().join(name);
            let x = Tensor::read_npy(dir.join("ref_input_chelsea_coffee.npy")).unwrap();
            let want = Tensor::read_npy(dir.join("ref_features.npy")).unwrap();
            let n = x.size()[0] as usize;
            let input = Vec::<f32>::try_from(&x.contiguous().view([-1])).unwrap();
            let m = load(&models(), name, Device::Cpu).unwrap();
            let got = run(&m, Device::Cpu, &input, n, Tta::None).unwrap();
            let want = Vec::<f32>::try_from(&want.contiguous().view([-1])).unwrap();
            assert_eq!(got.len(), n * dim, "{name}");
            let max = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max < 1e-4, "{name}: max abs diff {max}");
        }
    }

    /// A batch larger than one CPU chunk (and not a multiple of it) comes back whole and in
    /// order: row i is the reference features of the image at row i.
    #[test]
    fn batches_are_run_in_chunks_in_order() {
        let dir = models().join("mobilenet_v2");
        let x = Tensor::read_npy(dir.join("ref_input_chelsea_coffee.npy")).unwrap();
        let want = Tensor::read_npy(dir.join("ref_features.npy")).unwrap();
        let k = x.size()[0] as usize;
        let images = Vec::<f32>::try_from(&x.contiguous().view([-1])).unwrap();
        let want = Vec::<f32>::try_from(&want.contiguous().view([-1])).unwrap();
        let (per, dim) = (images.len() / k, want.len() / k);
        let n = CPU_CHUNK + 3;
        let input: Vec<f32> = (0..n)
            .flat_map(|i| images[(i % k) * per..(i % k + 1) * per].to_vec())
            .collect();
        let m = load(&models(), "mobilenet_v2", Device::Cpu).unwrap();
        let got = run(&m, Device::Cpu, &input, n, Tta::None).unwrap();
        assert_eq!(got.len(), n * dim);
        for i in 0..n {
            let (row, reference) = (
                &got[i * dim..(i + 1) * dim],
                &want[(i % k) * dim..(i % k + 1) * dim],
            );
            let max = row
                .iter()
                .zip(reference)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(max < 1e-4, "row {i}: max abs diff {max}");
        }
        assert!(run(&m, Device::Cpu, &[], 0, Tta::None).unwrap().is_empty());
    }

    #[test]
    fn each_view_apart_averages_to_the_views_run_and_starts_with_the_tile_as_it_is() {
        let dir = models().join("mobilenet_v2");
        let x = Tensor::read_npy(dir.join("ref_input_chelsea_coffee.npy")).unwrap();
        let n = x.size()[0] as usize;
        let input = Vec::<f32>::try_from(&x.contiguous().view([-1])).unwrap();
        let m = load(&models(), "mobilenet_v2", Device::Cpu).unwrap();
        let each = run_each_view(&m, Device::Cpu, &input, n, Tta::D4).unwrap();
        assert_eq!(each.len(), 8);
        let one = run(&m, Device::Cpu, &input, n, Tta::None).unwrap();
        let averaged = run(&m, Device::Cpu, &input, n, Tta::D4).unwrap();
        let max_diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        assert!(
            max_diff(&each[0], &one) < 1e-4,
            "view 0 is the tile as it is"
        );
        assert!(
            max_diff(&each[1], &one) > 1e-3,
            "a quarter turn changes the features"
        );
        let mean: Vec<f32> = (0..one.len())
            .map(|i| each.iter().map(|v| v[i]).sum::<f32>() / 8.0)
            .collect();
        assert!(max_diff(&mean, &averaged) < 1e-4);
    }

    #[test]
    fn unknown_backbone_is_refused() {
        assert!(matches!(
            load(&models(), "resnet9000", Device::Cpu),
            Err(InferError::Unknown(_))
        ));
    }
}
