//! The adapter's README.md: a Hugging Face model card with the base model, data, hyper-parameters
//! and results.

use crate::params::TrainParams;

/// The model card for an adapter trained with `params`; `report` is `train_report.json`.
pub(crate) fn model_card(
    params: &TrainParams,
    report: &serde_json::Value,
    results: &str,
) -> String {
    let field = |key: &str| {
        report
            .get(key)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into())
    };
    let base = &params.base_model;
    format!(
        "---\nlibrary_name: peft\nbase_model: {base}\ntags:\n- lora\n- qlora\n- tigerflow\n---\n\n\
# LoRA adapter for {base}\n\n\
Fine-tuned with tigerflow's `train` stage on a Telegram chat export turned into `### Name: text` conversations.\n\n\
## Data\n\n\
- training samples: {train} ({dropped} longer than {seq} tokens left out), packed into {rows} rows\n\
- test samples: {test}\n\
- tokens trained on: {tokens}\n\n\
## Hyper-parameters\n\n\
| key | value |\n|---|---|\n\
| base model (resolved) | {resolved} |\n\
| 4-bit base (NF4) | {nf4} (double quant: {dq}) |\n\
| LoRA r / alpha / dropout | {r} / {alpha} / {dropout} |\n\
| target modules | {targets} |\n\
| sequence_len / packing | {seq} / {packing} |\n\
| micro-batch × accumulation | {mb} × {ga} |\n\
| steps | {steps} |\n\
| optimizer | AdamW (β1 {b1}, β2 {b2}, ε {eps}, weight decay {wd}), global grad-norm clip {clip} |\n\
| learning rate | {lr} ({sched}, {warmup} warmup steps) |\n\
| compute | {dtype} on {device} |\n\
| seed | {seed} |\n\n\
## Results\n\n{results}\n\n\
## Use\n\n\
```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n\
base = AutoModelForCausalLM.from_pretrained(\"<the base model>\")\nmodel = PeftModel.from_pretrained(base, \"<this directory>\")\n```\n\n\
or `tigerflow generate --adapter <this directory>`.\n",
        train = field("train_samples"),
        dropped = field("train_samples_dropped"),
        rows = field("train_rows"),
        test = field("test_samples"),
        tokens = field("tokens_seen"),
        resolved = report
            .get("base_model_resolved")
            .and_then(|v| v.as_str())
            .unwrap_or("?"),
        nf4 = params.load_in_4bit,
        dq = params.double_quant,
        r = params.lora_r,
        alpha = params.lora_alpha,
        dropout = params.lora_dropout,
        targets = params.target_modules().join(", "),
        seq = params.sequence_len,
        packing = params.sample_packing,
        mb = params.micro_batch_size,
        ga = params.gradient_accumulation_steps,
        steps = field("steps"),
        b1 = params.adam_beta1,
        b2 = params.adam_beta2,
        eps = params.adam_epsilon,
        wd = params.weight_decay,
        clip = params.max_grad_norm,
        lr = params.learning_rate,
        sched = serde_json::to_value(params.lr_scheduler)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        warmup = params.warmup_steps,
        dtype = report
            .get("compute_dtype")
            .and_then(|v| v.as_str())
            .unwrap_or("f32"),
        device = params.device,
        seed = params.seed,
    )
}
