//! `aerial evaluate --run RUN DIR`: scores a labelled folder (`<label>/*.jpg|png`) with a
//! run's model on this machine, through the same preprocessing as featurize and score, and
//! reports accuracy, per-class precision/recall/F1 and the confusion matrix.

use aerial_model::classifier::{argmax_rows, ClassicModel};
use aerial_model::{backbone, mobilenet::Net, resolution, views};
use aerial_shared::{
    evaluation::{self, Evaluation},
    imaging,
    messages::{Method, Retraining, Tta},
    runs::{self, RunDescriptor},
    Settings, Store,
};
use anyhow::Context;
use ndarray::Array2;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Images per forward pass.
const BATCH: usize = 32;

/// `(path, label index)` of every image under `dir/<label>/`; labels must be the run's.
fn list(dir: &Path, labels: &[String]) -> anyhow::Result<Vec<(PathBuf, usize)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = entry?.path();
        if !p.is_dir() {
            continue;
        }
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let y = labels.iter().position(|l| *l == name).with_context(|| {
            format!(
                "folder {name:?} is not a label of this run ({})",
                labels.join(", ")
            )
        })?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(&p)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| {
                f.extension().is_some_and(|e| {
                    matches!(
                        e.to_string_lossy().to_lowercase().as_str(),
                        "jpg" | "jpeg" | "png"
                    )
                })
            })
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (f, y)));
    }
    anyhow::ensure!(
        !out.is_empty(),
        "no images under {}/<label>/",
        dir.display()
    );
    Ok(out)
}

/// The run's model, ready to give class probabilities of preprocessed images.
enum Model {
    Classic(aerial_model::frozen::Frozen, ClassicModel),
    Finetuned(Net),
}

impl Model {
    /// Probabilities with the run's test-time augmentation, as score gives them.
    fn proba(&self, input: Vec<f32>, n: usize, tta: Tta) -> anyhow::Result<Array2<f64>> {
        match self {
            Model::Classic(featurizer, m) => {
                let f = backbone::run(featurizer, Device::Cpu, &input, n, tta)?;
                let dim = f.len() / n;
                let x = Array2::from_shape_vec((n, dim), f.into_iter().map(f64::from).collect())?;
                Ok(m.predict_proba(x))
            }
            Model::Finetuned(net) => {
                let x = Tensor::from_slice(&input).view([n as i64, 3, 224, 224]);
                let p = views::mean_over(&x, tta, |v| {
                    Ok::<_, anyhow::Error>(
                        tch::no_grad(|| net.forward(v, false)).softmax(-1, Kind::Double),
                    )
                })?
                .contiguous();
                let k = p.size()[1] as usize;
                Ok(Array2::from_shape_vec(
                    (n, k),
                    Vec::<f64>::try_from(p.view([-1]))?,
                )?)
            }
        }
    }
}

async fn load_model(
    settings: &Settings,
    store: &Store,
    d: &RunDescriptor,
) -> anyhow::Result<Model> {
    let models = &settings.models.dir;
    Ok(match d.method {
        Method::Finetune => {
            let w = store.get(&runs::key(&d.run, runs::FINETUNED)).await?;
            let tmp = tempfile::tempdir()?;
            let path = tmp.path().join("finetuned.safetensors");
            std::fs::write(&path, &w)?;
            let mut net = Net::new(
                &models.join("mobilenet_v2/mobilenet_v2.safetensors"),
                d.labels.len(),
                d.retraining.unwrap_or(Retraining::All),
                Device::Cpu,
            )?;
            net.load_trained(&path)?;
            Model::Finetuned(net)
        }
        _ => Model::Classic(
            backbone::load(models, &d.backbone, Device::Cpu)?,
            store.get_json(&runs::key(&d.run, runs::MODEL)).await?,
        ),
    })
}

/// An image file preprocessed as score does, first degraded to the run's training
/// resolution when it has one (as its validation images were).
fn input_of(bytes: &[u8], degrade_px: Option<u32>) -> anyhow::Result<Vec<f32>> {
    let Some(px) = degrade_px else {
        return Ok(imaging::load_tensor(bytes)?);
    };
    let raw = imaging::resize_to_input(&imaging::decode_rgb(bytes)?).into_raw();
    let raw = resolution::degrade_rgb(&raw, imaging::INPUT_SIZE, px)?;
    Ok(imaging::chw_normalised_raw(&raw))
}

/// Evaluates `run` on the labelled folder `dir`.
pub async fn run(settings: &Settings, run: &str, dir: &Path, json: bool) -> anyhow::Result<()> {
    aerial_shared::keys::validate_run_name(run)?;
    let store = Store::connect(&settings.s3).await;
    let d: RunDescriptor = store
        .get_json(&runs::key(run, runs::DESCRIPTOR))
        .await
        .with_context(|| format!("run {run} has no descriptor (not finished?)"))?;
    let items = list(dir, &d.labels)?;
    let model = load_model(settings, &store, &d).await?;
    tch::set_num_threads(settings.worker.threads.max(1) as i32);
    let mut pairs = Vec::with_capacity(items.len());
    for chunk in items.chunks(BATCH) {
        let mut input = Vec::with_capacity(chunk.len() * 3 * 224 * 224);
        for (path, _) in chunk {
            let bytes = std::fs::read(path)?;
            let x = input_of(&bytes, d.params.degrade_px)
                .with_context(|| format!("{}: cannot be read", path.display()))?;
            input.extend_from_slice(&x);
        }
        let p = model.proba(input, chunk.len(), d.params.tta)?;
        pairs.extend(chunk.iter().map(|(_, y)| *y).zip(argmax_rows(&p)));
    }
    let e: Evaluation = evaluation::evaluate(&d.labels, pairs);
    if json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        println!(
            "run {run} ({} on {}, test-time views {}{}) on {}: {} images",
            d.method.as_str(),
            d.backbone,
            d.params.tta.views(),
            d.params
                .degrade_px
                .map(|px| format!(", images degraded to {px} px"))
                .unwrap_or_default(),
            dir.display(),
            e.total
        );
        crate::train::print_evaluation(&e, &d.labels, "images");
    }
    Ok(())
}
