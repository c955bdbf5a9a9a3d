//! The training loop: accumulate, clip, step, log, evaluate, checkpoint, resume.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};
use tigerflow_llm::lora::LoraConfig;
use tigerflow_llm::model::Llama;
use tigerflow_llm::peft::AdapterConfig;

use crate::adamw::{AdamW, AdamWConfig, clip_global_norm};
use crate::checkpoint::{self, CheckpointError, TrainerState};
use crate::flat::FlatLayout;
use crate::metrics::{MetricsLine, MetricsLog};
use crate::packing::{Batch, Padding, Row, collate};
use crate::plan::Plan;
use crate::schedule::{LrScheduler, Schedule};
use crate::step::{GradPair, eval_nll_sum, inference_model, micro_batch_grads};
use tigerflow_distributed::collective::{Collective, CollectiveError, Shard};
use tigerflow_llm::adapters::{attach_fresh, attach_peft, export, for_each_target_mut};
use tigerflow_llm::failure::{self, DeviceFailure};

/// Everything the loop needs besides the model and data.
#[derive(Debug, Clone)]
pub struct Settings {
    pub targets: Vec<String>,
    pub lora: LoraConfig,
    pub micro_batch_size: usize,
    pub accumulation: usize,
    pub num_epochs: usize,
    pub max_steps: Option<usize>,
    pub adamw: AdamWConfig,
    pub max_grad_norm: f64,
    pub learning_rate: f64,
    pub lr_scheduler: LrScheduler,
    pub warmup_steps: usize,
    pub eval_steps: usize,
    pub logging_steps: usize,
    pub save_steps: usize,
    pub seed: u64,
    pub recompute: bool,
    pub padding: Padding,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no training rows: every sample is longer than sequence_len or the split is empty; fix: raise sequence_len or check the split"
    )]
    NoData,
    #[error(
        "the loss became {loss} at step {step}; the last good checkpoint ({last_good}) is kept; fix: lower learning_rate or max_grad_norm, or check the data"
    )]
    NonFinite {
        step: usize,
        loss: f64,
        last_good: String,
    },
    #[error("cannot resume: {0}; fix: delete the stage's output directory to start afresh")]
    Resume(String),
    #[error("step {step}: {source}")]
    Ranks {
        step: usize,
        source: CollectiveError,
    },
    #[error(
        "{failure} in step {step}; the last good checkpoint ({last_good}) is kept; fix: lower micro_batch_size or sequence_len{}",
        if failure.out_of_memory() { "" } else { ", or report the message above" }
    )]
    Device {
        step: usize,
        failure: DeviceFailure,
        last_good: String,
    },
}

/// What the loop reports as it goes.
pub trait Observer {
    fn started(&mut self, total_steps: usize, resumed_at: usize);
    fn step_done(&mut self, line: &MetricsLine, total_steps: usize);
    fn log(&mut self, line: &str);
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub steps: usize,
    pub total_steps: usize,
    pub resumed_at: usize,
    pub final_eval_loss: Option<f64>,
    pub tokens_seen: u64,
}

/// Mixes the seed with a step and micro-batch index into an independent stream seed.
fn micro_seed(seed: u64, step: usize, micro: usize) -> u64 {
    let mut x = seed ^ ((step as u64) << 20) ^ micro as u64;
    // splitmix64 finaliser: nearby inputs give unrelated seeds.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Stops the run if the device failed since the last check: its results can no longer be trusted
/// (see `tigerflow_llm::failure`).
fn device_healthy(step: usize, last_good: &str) -> Result<(), TrainError> {
    failure::check().map_err(|failure| TrainError::Device {
        step,
        failure,
        last_good: last_good.to_owned(),
    })
}

/// The mean token NLL of `rows` (teacher forcing, no dropout) on a model without autodiff.
pub fn evaluate<B: Backend>(
    model: &Llama<B>,
    rows: &[Row],
    micro_batch_size: usize,
    padding: Padding,
) -> Option<f64> {
    let device = device_of(model);
    let (mut nll, mut tokens) = (0.0, 0usize);
    for chunk in rows.chunks(micro_batch_size) {
        let batch = collate(chunk, padding);
        tokens += batch.target_tokens;
        nll += eval_nll_sum(model, &batch, &device);
    }
    (tokens > 0).then(|| nll / tokens as f64)
}

fn device_of<B: Backend>(model: &Llama<B>) -> B::Device {
    model.embed_tokens.val().device()
}

/// The summed gradients of one optimizer step.
pub struct Accumulated<B: AutodiffBackend> {
    pub nll_sum: f64,
    pub tokens: usize,
    /// `(lora_A, lora_B)` gradients of the mean token loss, in adapter order.
    pub grads: Vec<GradPair<B::InnerBackend>>,
}

impl<B: AutodiffBackend> Accumulated<B> {
    /// The step's loss: mean NLL over all its target tokens.
    pub fn loss(&self) -> f64 {
        self.nll_sum / self.tokens.max(1) as f64
    }
}

/// Runs every micro-batch of a step and sums their gradients; each micro-batch's loss is
/// divided by the step's total target tokens, so the sum is the gradient of the step's mean.
pub fn accumulate<B: AutodiffBackend>(
    model: &Llama<B>,
    targets: &[String],
    batches: &[Batch],
    step_seed: u64,
    recompute: bool,
    device: &B::Device,
) -> Accumulated<B> {
    accumulate_shard(
        model,
        targets,
        batches,
        Shard::WHOLE,
        step_seed,
        recompute,
        device,
    )
}

/// [`accumulate`] over `shard`'s micro-batches of the step only. Losses are still divided by
/// the whole step's target tokens, so the ranks' sums add up to the step's gradient; a rank with
/// no micro-batch in a short last step returns no gradients.
pub fn accumulate_shard<B: AutodiffBackend>(
    model: &Llama<B>,
    targets: &[String],
    batches: &[Batch],
    shard: Shard,
    step_seed: u64,
    recompute: bool,
    device: &B::Device,
) -> Accumulated<B> {
    let tokens: usize = batches.iter().map(|b| b.target_tokens).sum();
    let scale = 1.0 / tokens.max(1) as f64;
    let mut nll_sum = 0.0;
    let mut grads: Vec<GradPair<B::InnerBackend>> = Vec::new();
    for (j, batch) in batches.iter().enumerate().filter(|(j, _)| shard.owns(*j)) {
        let g = micro_batch_grads(
            model,
            targets,
            batch,
            scale,
            micro_seed(step_seed, 0, j),
            recompute,
            device,
        );
        nll_sum += g.nll_sum;
        grads = if grads.is_empty() {
            g.grads
        } else {
            grads
                .into_iter()
                .zip(g.grads)
                .map(|((a0, b0), (a1, b1))| (a0 + a1, b0 + b1))
                .collect()
        };
    }
    Accumulated {
        nll_sum,
        tokens,
        grads,
    }
}

/// The adapter tensors of `model` without autodiff, `lora_A` then `lora_B` of every target in
/// adapter order, and their layout (named as the optimizer checkpoint names them).
pub fn adapter_tensors<B: AutodiffBackend>(
    model: &mut Llama<B>,
    targets: &[String],
) -> (FlatLayout, Vec<Tensor<B::InnerBackend, 2>>) {
    let mut entries = Vec::new();
    let mut tensors = Vec::new();
    for_each_target_mut(model, targets, |name, projection| {
        if let Some(lora) = &projection.lora {
            for (suffix, t) in [("lora_A", lora.lora_a.val()), ("lora_B", lora.lora_b.val())] {
                entries.push((format!("{name}.{suffix}"), t.dims()));
                tensors.push(t.inner());
            }
        }
    });
    (FlatLayout::new(entries), tensors)
}

/// The gradients as one vector in `layout`'s order; zeros when there are none (a rank that had
/// no micro-batch in a step).
pub fn flat_gradient<B: Backend>(
    layout: &FlatLayout,
    grads: Vec<GradPair<B>>,
    device: &B::Device,
) -> Tensor<B, 1> {
    if grads.is_empty() {
        return Tensor::zeros([layout.elements()], device);
    }
    layout.flatten(grads.into_iter().flat_map(|(a, b)| [a, b]).collect())
}

/// Clips the flat gradient `grad` to `max_grad_norm` (global), takes one AdamW step at `lr` and
/// writes the new adapter weights into `model`, for `adapters` as [`adapter_tensors`] returned
/// them. Returns the norm before clipping.
///
/// `weights` carries the flat adapter weights from one update to the next: the update leaves in
/// it the vector whose views it wrote into `model`, and the next update starts from it instead
/// of gathering `adapters` again (a copy of every adapter tensor per step). Pass `None` on the
/// first update, and whenever the model's adapters were changed by anything else.
#[allow(clippy::too_many_arguments)]
pub fn apply_flat_update<B: AutodiffBackend>(
    model: &mut Llama<B>,
    targets: &[String],
    optimizer: &mut AdamW<B::InnerBackend>,
    adapters: (FlatLayout, Vec<Tensor<B::InnerBackend, 2>>),
    weights: &mut Option<Tensor<B::InnerBackend, 1>>,
    grad: Tensor<B::InnerBackend, 1>,
    lr: f64,
    max_grad_norm: f64,
) -> f64 {
    let (layout, params) = adapters;
    let (grad, grad_norm) = clip_global_norm(grad, max_grad_norm);
    let current = weights.take().unwrap_or_else(|| layout.flatten(params));
    let updated = optimizer.step(current, grad, lr);
    *weights = Some(updated.clone());
    let mut parts = layout.split(updated).into_iter();
    for_each_target_mut(model, targets, |_, projection| {
        let Some(lora) = projection.lora.as_mut() else {
            return;
        };
        let (a, b) = (
            parts.next().expect("one tensor per lora_A"),
            parts.next().expect("one tensor per lora_B"),
        );
        lora.lora_a = Param::initialized(lora.lora_a.id, Tensor::from_inner(a).require_grad());
        lora.lora_b = Param::initialized(lora.lora_b.id, Tensor::from_inner(b).require_grad());
    });
    grad_norm
}

/// The step's gradient and NLL sum, added up over all ranks: what one process computing the
/// whole step would hold. The gradient is widened to f32 on the device, so that the host only
/// copies it and bf16 partial sums add up without rounding.
pub fn sum_over_ranks<B: Backend>(
    collective: &mut dyn Collective,
    grad: Tensor<B, 1>,
    nll_sum: f64,
) -> Result<(Tensor<B, 1>, f64), CollectiveError> {
    if collective.world_size() == 1 {
        return Ok((grad, nll_sum));
    }
    let (device, dtype) = (grad.device(), grad.dtype());
    let mut values: Vec<f32> = grad
        .cast(DType::F32)
        .into_data()
        .into_vec()
        .expect("cast to f32");
    collective.all_reduce_sum(&mut values)?;
    let mut nll = [nll_sum as f32];
    collective.all_reduce_sum(&mut nll)?;
    let len = values.len();
    let sum = Tensor::<B, 1>::from_data(TensorData::new(values, [len]), (&device, DType::F32));
    Ok((sum.cast(dtype), f64::from(nll[0])))
}

/// Trains the adapters of `model` (which must hold fresh adapters or none) on `plan`'s rows,
/// writing checkpoints and `metrics.jsonl` under `out`. A previous attempt's checkpoint in
/// `out` is resumed. `stop_after` ends the run early after that many steps (a simulated kill).
///
/// With several ranks in `collective`, every rank calls this with the same plan and settings:
/// each computes its [`Shard`] of every step, the gradients are summed over the ranks, and all
/// ranks take the same update. Rank 0 alone evaluates and writes metrics and checkpoints.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    model: &mut Llama<B>,
    plan: &Plan,
    test_rows: &[Row],
    settings: &Settings,
    adapter_config: &AdapterConfig,
    out: &Path,
    device: &B::Device,
    collective: &mut dyn Collective,
    observer: &mut dyn Observer,
    stop_after: Option<usize>,
) -> Result<Outcome, TrainError> {
    if plan.rows().is_empty() {
        return Err(TrainError::NoData);
    }
    let schedule = Schedule {
        kind: settings.lr_scheduler,
        peak: settings.learning_rate,
        warmup: settings.warmup_steps,
        total: plan.total_steps,
    };
    let mut optimizer = AdamW::<B::InnerBackend>::new(settings.adamw);
    let restored = checkpoint::latest::<B::InnerBackend>(out, device)?;
    let mut state = match restored {
        Some(r) => {
            attach_peft(model, &r.adapter, device).map_err(TrainError::Resume)?;
            let (layout, _) = adapter_tensors(model, &settings.targets);
            optimizer
                .restore(&layout, r.moments, r.state.step)
                .map_err(TrainError::Resume)?;
            observer.log(&format!(
                "resuming from the checkpoint at step {}",
                r.state.step
            ));
            r.state
        }
        None => {
            let mut rng =
                <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(settings.seed);
            attach_fresh(
                model,
                &settings.targets,
                &settings.lora,
                || rand::Rng::random::<f32>(&mut rng),
                device,
            );
            TrainerState {
                step: 0,
                epoch: 0,
                micro_batch: 0,
                seed: settings.seed,
                tokens_seen: 0,
            }
        }
    };
    let resumed_at = state.step;
    let metrics_path = out.join("metrics.jsonl");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TrainError::Io { path, source }
    };
    let leader = collective.rank() == 0;
    let metrics = if leader {
        Some(MetricsLog::open(&metrics_path, resumed_at).map_err(io(&metrics_path))?)
    } else {
        None
    };
    let shard = Shard::of(collective);
    observer.started(plan.total_steps, resumed_at);
    let mut last_good = if resumed_at > 0 {
        format!("step {resumed_at}")
    } else {
        "none yet".to_owned()
    };
    let mut final_eval = None;
    let mut weights = None;

    for step in resumed_at..plan.total_steps {
        let started = Instant::now();
        let batches = plan.step(step);
        let acc = accumulate_shard(
            model,
            &settings.targets,
            &batches,
            shard,
            micro_seed(settings.seed, step, 0),
            settings.recompute,
            device,
        );
        device_healthy(step + 1, &last_good)?;
        let adapters = adapter_tensors(model, &settings.targets);
        let grad = flat_gradient(&adapters.0, acc.grads, device);
        let (grad, nll_sum) =
            sum_over_ranks(collective, grad, acc.nll_sum).map_err(|source| TrainError::Ranks {
                step: step + 1,
                source,
            })?;
        let loss = nll_sum / acc.tokens.max(1) as f64;
        if !loss.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                loss,
                last_good,
            });
        }
        let tokens = acc.tokens;
        let lr = schedule.lr(step);
        let grad_norm = apply_flat_update(
            model,
            &settings.targets,
            &mut optimizer,
            adapters,
            &mut weights,
            grad,
            lr,
            settings.max_grad_norm,
        );

        let done = step + 1;
        state.step = done;
        state.tokens_seen += tokens as u64;
        let position = plan.position(done);
        (state.epoch, state.micro_batch) = (position.epoch, position.micro_batch);
        let last = done == plan.total_steps;
        let elapsed = started.elapsed().as_secs_f64().max(1e-9);
        let mut line = MetricsLine::empty(done, plan.epoch_progress(done));
        line.loss = Some(loss);
        line.lr = Some(lr);
        line.grad_norm = Some(grad_norm);
        line.tokens = Some(tokens);
        line.tokens_per_s = Some(tokens as f64 / elapsed);
        if let Some(metrics) = &metrics
            && (done % settings.logging_steps == 0 || last)
        {
            metrics.append(&line).map_err(io(&metrics_path))?;
        }
        observer.step_done(&line, plan.total_steps);
        let eval_due = (settings.eval_steps > 0 && done % settings.eval_steps == 0) || last;
        if let Some(metrics) = &metrics
            && eval_due
            && let Some(eval_loss) = evaluate(
                &inference_model(model),
                test_rows,
                settings.micro_batch_size,
                settings.padding,
            )
        {
            let mut eval = MetricsLine::empty(done, plan.epoch_progress(done));
            eval.eval_loss = Some(eval_loss);
            metrics.append(&eval).map_err(io(&metrics_path))?;
            observer.log(&format!("step {done}: eval loss {eval_loss:.4}"));
            final_eval = Some(eval_loss);
        }
        if leader && (done % settings.save_steps.max(1) == 0 || last) {
            device_healthy(done, &last_good)?;
            let adapter = export(model, &settings.targets, adapter_config.clone());
            let (layout, _) = adapter_tensors(model, &settings.targets);
            checkpoint::save(out, &state, &adapter, &optimizer.named_moments(&layout))?;
            last_good = format!("step {done}");
        }
        if stop_after == Some(done) {
            break;
        }
    }
    Ok(Outcome {
        steps: state.step,
        total_steps: plan.total_steps,
        resumed_at,
        final_eval_loss: final_eval,
        tokens_seen: state.tokens_seen,
    })
}
