//! The model against transformers: logits of tiny random Llama models (fixtures written by
//! make_fixtures.py) loaded from safetensors and GGUF, packed samples, cached generation, GGUF
//! tokenizers and ggml dequantization.

use std::path::{Path, PathBuf};

use burn::tensor::{Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use tigerflow_llm::backend::CpuBackend;
use tigerflow_llm::generate::generate_tokens;
use tigerflow_llm::model::{CacheView, Llama};
use tigerflow_llm::open::ModelFiles;
use tigerflow_llm::quant::{GgmlType, dequantize};
use tigerflow_llm::sampling::{Sampler, SamplingConfig, argmax};
use tigerflow_llm::weights::{dense, load_llama};

type B = CpuBackend;

const FIXTURES: [&str; 3] = ["gqa_tied", "mha_untied_linear", "gqa_llama3"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A reference array: its shape and values (i64 arrays converted to f64 losslessly enough).
struct Array {
    shape: Vec<usize>,
    values: Vec<f64>,
}

fn reference(name: &str, key: &str) -> Array {
    let bytes = std::fs::read(fixture(name).join("reference.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let view = file.tensor(key).unwrap();
    let data = view.data();
    let values = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unexpected dtype {other:?}"),
    };
    Array {
        shape: view.shape().to_vec(),
        values,
    }
}

fn ids(array: &Array) -> Tensor<B, 2, Int> {
    let data: Vec<i64> = array.values.iter().map(|&v| v as i64).collect();
    Tensor::from_data(
        TensorData::new(data, [array.shape[0], array.shape[1]]),
        &Default::default(),
    )
}

fn load(path: &Path) -> (Llama<B>, ModelFiles) {
    let mut files = ModelFiles::open(path).unwrap();
    let device = Default::default();
    let model = load_llama(
        &files.config,
        files.weights.as_mut(),
        &device,
        &mut dense(&device),
    )
    .unwrap();
    (model, files)
}

fn positions(batch: usize, len: usize) -> Tensor<B, 2, Int> {
    Tensor::<B, 1, Int>::arange(0..len as i64, &Default::default())
        .reshape([1, len])
        .expand([batch, len])
}

/// max |actual − expected| / max |expected|.
fn assert_close(actual: Tensor<B, 3>, expected: &Array, what: &str) {
    assert_eq!(actual.dims().to_vec(), expected.shape, "{what}: shape");
    let actual: Vec<f32> = actual.into_data().into_vec().unwrap();
    let scale = expected.values.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let err = actual
        .iter()
        .zip(&expected.values)
        .fold(0.0f64, |m, (a, e)| m.max((*a as f64 - e).abs()));
    assert!(
        err / scale <= 1e-4,
        "{what}: relative error {:.3e}",
        err / scale
    );
}

#[test]
fn safetensors_logits_match_transformers() {
    for name in FIXTURES {
        let (model, _) = load(&fixture(name));
        let input = reference(name, "input_ids");
        let [b, l] = [input.shape[0], input.shape[1]];
        let logits = model.forward(ids(&input), positions(b, l), None);
        assert_close(logits, &reference(name, "logits"), name);
        let far = reference(name, "far_positions");
        let logits = model.forward(ids(&input), ids(&far), None);
        assert_close(
            logits,
            &reference(name, "far_logits"),
            &format!("{name} far positions"),
        );
    }
}

#[test]
fn packed_segments_do_not_see_each_other() {
    for name in FIXTURES {
        let (model, _) = load(&fixture(name));
        let packed = reference(name, "packed_ids");
        let device = Default::default();
        let (a, b) = (7, 5);
        let pos: Vec<i64> = (0..a).chain(0..b).collect();
        let seg: Vec<i64> = std::iter::repeat_n(0, a as usize)
            .chain(std::iter::repeat_n(1, b as usize))
            .collect();
        let pos = Tensor::<B, 2, Int>::from_data(TensorData::new(pos, [1, 12]), &device);
        let seg = Tensor::<B, 2, Int>::from_data(TensorData::new(seg, [1, 12]), &device);
        let logits = model.forward(ids(&packed), pos, Some(seg));
        assert_close(
            logits,
            &reference(name, "packed_logits"),
            &format!("{name} packed"),
        );
    }
}

#[test]
fn gguf_logits_match_transformers() {
    for name in ["gqa_tied", "mha_untied_linear"] {
        let input = reference(name, "input_ids");
        let [b, l] = [input.shape[0], input.shape[1]];
        for (file, key) in [
            ("model-f32.gguf", "logits"),
            ("model-f16.gguf", "logits_f16"),
        ] {
            let (model, files) = load(&fixture(name).join(file));
            assert_eq!(files.config.tie_word_embeddings, name == "gqa_tied");
            let logits = model.forward(ids(&input), positions(b, l), None);
            assert_close(logits, &reference(name, key), &format!("{name}/{file}"));
        }
    }
}

#[test]
fn cached_generation_matches_recompute_and_transformers() {
    for name in FIXTURES {
        let (model, _) = load(&fixture(name));
        let prompt: Vec<u32> = reference(name, "greedy_prompt")
            .values
            .iter()
            .map(|&v| v as u32)
            .collect();
        let expected: Vec<u32> = reference(name, "greedy_tokens")
            .values
            .iter()
            .map(|&v| v as u32)
            .collect();
        let cached_with = |view| {
            let mut sampler = Sampler::new(SamplingConfig::default());
            let (tokens, _) = generate_tokens(
                &model,
                &prompt,
                expected.len(),
                &mut sampler,
                &[],
                view,
                &mut |_| true,
            );
            tokens
        };
        let cached = cached_with(CacheView::Filled);
        assert_eq!(
            cached_with(CacheView::Capacity),
            cached,
            "{name}: padded prompt and masked capacity vs exact shapes"
        );

        let mut recomputed = prompt.clone();
        for _ in 0..expected.len() {
            let input = Array {
                shape: vec![1, recomputed.len()],
                values: recomputed.iter().map(|&v| v as f64).collect(),
            };
            let logits = model.forward(ids(&input), positions(1, recomputed.len()), None);
            let [_, l, v] = logits.dims();
            let last: Vec<f32> = logits
                .slice([0..1, l - 1..l, 0..v])
                .into_data()
                .into_vec()
                .unwrap();
            recomputed.push(argmax(&last));
        }
        assert_eq!(
            cached,
            recomputed[prompt.len()..],
            "{name}: cache vs recompute"
        );
        assert_eq!(cached, expected, "{name}: vs transformers generate");
    }
}

#[test]
fn tokenizers_from_json_and_gguf_match_the_reference() {
    let name = "gqa_tied";
    let probes = [
        "### SZ: Quem vem a Lisboa no natal?",
        "Jantamos às 20h, 2024 foi bom!",
        "<|im_start|>user\nOlá<|im_end|>",
    ];
    for path in [fixture(name), fixture(name).join("model-f32.gguf")] {
        let files = ModelFiles::open(&path).unwrap();
        for (i, text) in probes.iter().enumerate() {
            let expected: Vec<u32> = reference(name, &format!("probe_{i}"))
                .values
                .iter()
                .map(|&v| v as u32)
                .collect();
            let actual = files.tokenizer.encode(text, false).unwrap();
            assert_eq!(actual, expected, "{}: {text:?}", path.display());
            assert_eq!(
                files.tokenizer.decode(&actual).unwrap(),
                text.replace("<|im_start|>", "").replace("<|im_end|>", "")
            );
        }
        assert_eq!(files.tokenizer.bos_id, Some(1));
        assert_eq!(files.tokenizer.eos_ids, vec![2]);
    }
}

#[test]
fn ggml_dequantization_is_bit_exact() {
    let bytes = std::fs::read(fixture("quant_blocks.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    for (kind, key) in [
        (GgmlType::Q4_0, "Q4_0"),
        (GgmlType::Q4_1, "Q4_1"),
        (GgmlType::Q8_0, "Q8_0"),
    ] {
        let raw = file.tensor(&format!("{key}_raw")).unwrap();
        let expected: Vec<u32> = file
            .tensor(&format!("{key}_dequant"))
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let mut out = Vec::new();
        dequantize(kind, raw.data(), &mut out);
        let bits: Vec<u32> = out.iter().map(|v| v.to_bits()).collect();
        assert_eq!(bits, expected, "{key}");
    }
}

#[test]
fn a_full_kv_cache_grows_and_keeps_its_tokens() {
    let (model, _) = load(&fixture("gqa_tied"));
    let input = reference("gqa_tied", "input_ids");
    let row: Vec<i64> = input.values[..input.shape[1]]
        .iter()
        .map(|&v| v as i64)
        .collect();
    let device = Default::default();
    let token_by_token = |view| {
        // Capacity 2: the third token already needs a larger cache.
        let mut cache = model.new_cache(1, 2, view);
        let mut last = None;
        for &id in &row {
            let token = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![id], [1, 1]), &device);
            last = Some(model.forward_cached(token, &mut cache));
        }
        assert_eq!(cache.len(), row.len());
        assert!(cache.capacity() >= row.len());
        last.unwrap()
    };
    let whole =
        Tensor::<B, 2, Int>::from_data(TensorData::new(row.clone(), [1, row.len()]), &device);
    let full = model.forward(whole, positions(1, row.len()), None);
    let [_, l, v] = full.dims();
    let expected = Array {
        shape: vec![1, 1, v],
        values: full
            .slice([0..1, l - 1..l, 0..v])
            .into_data()
            .into_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect(),
    };
    for view in [CacheView::Filled, CacheView::Capacity] {
        assert_close(
            token_by_token(view),
            &expected,
            &format!("token by token through a growing cache, {view:?}"),
        );
    }
}
