//! `uses = "eval"`: the test loss and perplexity of the base model and of the fine-tuned model,
//! greedy generations of both for a few prompts, `metrics.json` and `report.html`.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use tigerflow_finetune::base::{BaseSpec, LoadedBase, load_base};
use tigerflow_finetune::data::{read_texts, wrap};
use tigerflow_finetune::packing::{Padding, pack};
use tigerflow_finetune::plot::{loss_series, lr_series, svg};
use tigerflow_finetune::trainer::evaluate;
use tigerflow_llm::adapters::attach_peft;
use tigerflow_llm::device::{DeviceSpec, OnBackend, run_on};
use tigerflow_llm::generate::{cache_view_for, generate_tokens};
use tigerflow_llm::model::CacheView;
use tigerflow_llm::peft::PeftAdapter;
use tigerflow_llm::sampling::{Sampler, SamplingConfig};
use tigerflow_stage::{Context, InputSlot, StageError, TypedStage};

use crate::params::EvalParams;
use crate::report::{EvalMetrics, Sample, Scores, render};

pub struct EvalStage;

const INPUTS: &[InputSlot] = &[
    InputSlot {
        name: "data",
        required: true,
        help: "the split stage's output: a directory with test.jsonl",
    },
    InputSlot {
        name: "adapter",
        required: true,
        help: "the train stage's output (or a PEFT adapter directory)",
    },
];

impl TypedStage for EvalStage {
    const KIND: &'static str = "eval";
    const CODE_VERSION: u32 = 2;
    const INPUTS: &'static [InputSlot] = INPUTS;
    type Params = EvalParams;

    fn outputs(&self, _params: &EvalParams) -> Vec<PathBuf> {
        vec![PathBuf::from("metrics.json"), PathBuf::from("report.html")]
    }

    fn extra_dependencies(&self, params: &EvalParams) -> Vec<PathBuf> {
        if !params.base_model.is_empty() && tigerflow_finetune::base::is_local(&params.base_model) {
            vec![PathBuf::from(&params.base_model)]
        } else {
            Vec::new()
        }
    }

    fn run(&self, params: &EvalParams, ctx: &mut Context<'_>) -> Result<(), StageError> {
        let spec =
            DeviceSpec::parse(&params.device).map_err(|e| StageError::Failed(e.to_string()))?;
        let cache_dir = ctx.cache_dir;
        let stage = ctx.stage_name;
        let work = Evaluation {
            params,
            ctx,
            cache_view: cache_view_for(spec),
        };
        run_on(spec, params.bf16, cache_dir, work)
            .map_err(|m| StageError::Failed(format!("stage `{stage}`: {m}")))?
    }
}

/// The stage's work, for whichever backend `device` selects.
struct Evaluation<'p, 'c, 'r> {
    params: &'p EvalParams,
    ctx: &'c mut Context<'r>,
    cache_view: CacheView,
}

impl OnBackend for Evaluation<'_, '_, '_> {
    type Output = Result<(), StageError>;
    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        evaluate_on::<B>(self.params, self.ctx, self.cache_view, device)
    }
}

/// The train stage's output holds the adapter under `adapter/`; a bare PEFT directory works too.
fn adapter_dir(input: &Path) -> PathBuf {
    let nested = input.join("adapter");
    if nested.join(tigerflow_llm::peft::ADAPTER_CONFIG).exists() {
        nested
    } else {
        input.to_owned()
    }
}

/// The first line of a conversation (its opening turn), ending in a newline so that the model
/// continues with the next turn.
fn opening(text: &str) -> String {
    format!("{}\n", text.lines().next().unwrap_or_default())
}

fn evaluate_on<B: Backend>(
    params: &EvalParams,
    ctx: &mut Context<'_>,
    cache_view: CacheView,
    device: B::Device,
) -> Result<(), StageError> {
    let data = ctx.input("data")?.to_owned();
    let adapter_input = ctx.input("adapter")?.to_owned();
    let dir = adapter_dir(&adapter_input);
    let adapter = PeftAdapter::load(&dir).map_err(|e| StageError::Failed(e.to_string()))?;
    let base_model = if params.base_model.is_empty() {
        adapter.config.base_model_name_or_path.clone().ok_or_else(|| {
            StageError::Failed(format!(
                "stage `{}`: the adapter names no base model; fix: set base_model in [stages.{}]",
                ctx.stage_name, ctx.stage_name
            ))
        })?
    } else {
        params.base_model.clone()
    };
    let spec = BaseSpec {
        model: &base_model,
        load_in_4bit: params.load_in_4bit,
        double_quant: params.double_quant,
    };
    let LoadedBase {
        mut model,
        tokenizer,
        resolved,
    } = load_base::<B>(&spec, ctx, &device)?;
    ctx.reporter
        .log(&format!("base model {base_model} ({resolved})"));

    let test_path = if data.is_file() {
        data.clone()
    } else {
        data.join("test.jsonl")
    };
    let mut texts = read_texts(&test_path)?;
    if let Some(n) = params.max_eval_samples {
        texts.truncate(n);
    }
    let samples = texts
        .iter()
        .map(|t| {
            tokenizer
                .encode(t)
                .map(|ids| wrap(ids, tokenizer.bos, tokenizer.eos))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rows = pack(&samples, params.sequence_len, true).rows;
    let test_tokens = rows.iter().map(|r| r.target_tokens()).sum();
    let prompts: Vec<String> = if params.prompts.is_empty() {
        texts
            .iter()
            .take(params.num_prompts)
            .map(|t| opening(t))
            .collect()
    } else {
        params.prompts.clone()
    };
    let encoded_prompts = prompts
        .iter()
        .map(|p| {
            tokenizer
                .encode(p)
                .map(|ids| tokenizer.bos.into_iter().chain(ids).collect::<Vec<u32>>())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stop = [tokenizer.eos];
    let generate_all = |model: &tigerflow_llm::model::Llama<B>| -> Result<Vec<String>, StageError> {
        encoded_prompts
            .iter()
            .map(|p| {
                let mut greedy = Sampler::new(SamplingConfig::default());
                let (ids, _) = generate_tokens(
                    model,
                    p,
                    params.max_new_tokens,
                    &mut greedy,
                    &stop,
                    cache_view,
                    &mut |_| true,
                );
                tokenizer.decode(&ids)
            })
            .collect()
    };
    let no_tokens = || {
        StageError::Failed(format!(
            "stage `{}`: the test split has no tokens to score; fix: check the split stage's test.jsonl",
            ctx.stage_name
        ))
    };

    let padding = Padding::to_sequence_len(
        tokenizer.pad,
        params.pad_to_sequence_len,
        params.micro_batch_size,
        params.sequence_len,
    );
    ctx.reporter.begin("evaluating", Some(2), "models");
    let base_loss =
        evaluate(&model, &rows, params.micro_batch_size, padding).ok_or_else(no_tokens)?;
    let base_generations = generate_all(&model)?;
    ctx.reporter.set_position(1);
    attach_peft(&mut model, &adapter, &device)
        .map_err(|m| StageError::Failed(format!("{}: {m}", dir.display())))?;
    let tuned_loss =
        evaluate(&model, &rows, params.micro_batch_size, padding).ok_or_else(no_tokens)?;
    let tuned_generations = generate_all(&model)?;
    ctx.reporter.set_position(2);
    // Figures computed after a device thread failed would be written as if they were real.
    tigerflow_llm::failure::check().map_err(|f| {
        StageError::Failed(format!(
            "{f}; fix: lower micro_batch_size or sequence_len of this stage"
        ))
    })?;
    ctx.reporter.log(&format!(
        "test loss: base {base_loss:.4}, fine-tuned {tuned_loss:.4}"
    ));

    let metrics = EvalMetrics {
        base_model,
        test_samples: texts.len(),
        test_tokens,
        base: Scores::from_loss(base_loss),
        tuned: Scores::from_loss(tuned_loss),
        samples: prompts
            .into_iter()
            .zip(base_generations.into_iter().zip(tuned_generations))
            .map(|(prompt, (base, tuned))| Sample {
                prompt,
                base,
                tuned,
            })
            .collect(),
    };
    let lines =
        tigerflow_finetune::metrics::read(&adapter_input.join("metrics.jsonl")).unwrap_or_default();
    let curves = if lines.is_empty() {
        Vec::new()
    } else {
        vec![
            svg("Loss", "mean token NLL", &loss_series(&lines)).map_err(StageError::Failed)?,
            svg("Learning rate", "lr", &lr_series(&lines)).map_err(StageError::Failed)?,
        ]
    };
    let write = |name: &str, text: String| {
        let path = ctx.output(name);
        std::fs::write(&path, text)
            .map_err(|e| StageError::io(format!("writing {}", path.display()), e))
    };
    write(
        "metrics.json",
        serde_json::to_string_pretty(&metrics).expect("metrics serialize"),
    )?;
    write("report.html", render(&metrics, &curves))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_is_the_first_turn() {
        assert_eq!(opening("### A: hi\n### B: yo"), "### A: hi\n");
    }
}
