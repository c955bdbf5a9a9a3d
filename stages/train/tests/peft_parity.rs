//! The trainer against transformers + PEFT (fixture from `fixtures/make_peft_fixture.py`):
//! the same tiny model, adapter init, micro-batches and hyper-parameters must give the same
//! first-step LoRA gradients and the same losses for 10 optimizer steps.

mod common;

use common::*;
use safetensors::SafeTensors;
use tigerflow_llm::adapters::{attach_peft, layer_adapters};
use tigerflow_llm::peft::PeftAdapter;
use tigerflow_train::adamw::AdamW;
use tigerflow_train::packing::{Batch, IGNORE};
use tigerflow_train::schedule::{LrScheduler, Schedule};
use tigerflow_train::trainer::{accumulate, apply_update};

fn batch(st: &SafeTensors<'_>, step: usize, micro: usize) -> Batch {
    let ids = i64s(st, &format!("step{step}.micro{micro}.input_ids"));
    let labels = i64s(st, &format!("step{step}.micro{micro}.labels"));
    let (rows, len) = (2, ids.len() / 2);
    // Right padding is a segment of its own, as HF's attention mask hides it.
    let mask = i64s(st, &format!("step{step}.micro{micro}.attention_mask"));
    let segment_ids = mask.iter().map(|&m| if m == 1 { 0 } else { -1 }).collect();
    Batch {
        rows,
        len,
        position_ids: (0..rows).flat_map(|_| 0..len as i64).collect(),
        target_tokens: labels.iter().filter(|&&l| l != IGNORE).count(),
        input_ids: ids,
        labels,
        segment_ids,
    }
}

#[test]
fn matches_peft_gradients_and_losses() {
    let dir = fixture_dir();
    let bytes = std::fs::read(dir.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let device = Default::default();
    let mut model = tiny_model(false);
    let adapter = PeftAdapter::load(&dir.join("adapter")).unwrap();
    assert_eq!(adapter.modules.len(), 14);
    attach_peft(&mut model, &adapter, &device).unwrap();
    let targets = all_linear();
    let mut s = settings(0.0);
    s.adamw.weight_decay = 0.0;
    let mut optimizer = AdamW::new(s.adamw);
    let schedule = Schedule {
        kind: LrScheduler::Cosine,
        peak: 1e-2,
        warmup: 2,
        total: 10,
    };
    let losses = f64s(&st, "losses");
    let norms = f64s(&st, "grad_norms");
    let lrs = f64s(&st, "lrs");
    for step in 0..10 {
        let batches = [batch(&st, step, 0), batch(&st, step, 1)];
        let acc = accumulate(&model, &targets, &batches, 0, step % 2 == 0, &device);
        let loss = acc.loss();
        assert!(
            (loss - losses[step]).abs() / losses[step] < 1e-5,
            "step {step}: loss {loss} vs PEFT {}",
            losses[step]
        );
        assert!(
            (schedule.lr(step) - lrs[step]).abs() < 1e-12,
            "step {step}: lr"
        );
        if step == 0 {
            let names: Vec<String> = model
                .layers
                .iter()
                .enumerate()
                .flat_map(|(i, l)| layer_adapters(i, l, &targets).into_iter().map(|(n, _)| n))
                .collect();
            for (name, (ga, gb)) in names.iter().zip(&acc.grads) {
                let want_a = f32s(&st, &format!("grad.{name}.lora_A.weight"));
                let want_b = f32s(&st, &format!("grad.{name}.lora_B.weight"));
                assert!(
                    to_vec(ga.clone()).iter().all(|g| *g == 0.0)
                        && want_a.iter().all(|g| *g == 0.0),
                    "{name}: lora_A grad is zero while B = 0"
                );
                let rel = max_rel(&to_vec(gb.clone()), &want_b);
                assert!(rel < 1e-4, "{name}: lora_B grad differs (max rel {rel})");
            }
        }
        let norm = apply_update(
            &mut model,
            &targets,
            &mut optimizer,
            acc.grads,
            schedule.lr(step),
            1.0,
        );
        assert!(
            (norm - norms[step]).abs() / norms[step] < 1e-4,
            "step {step}: grad norm {norm} vs {}",
            norms[step]
        );
    }
}
