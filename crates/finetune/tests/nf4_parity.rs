//! NF4 against bitsandbytes itself: `fixtures/nf4.safetensors` holds tensors quantized by
//! `bitsandbytes.functional.quantize_4bit` (made by `fixtures/make_nf4_fixtures.py`).

use burn::tensor::Tensor;
use safetensors::SafeTensors;
use tigerflow_llm::backend::CpuBackend;
use tigerflow_llm::nf4::{Absmax, Nf4Tensor, dynamic_map};

const FIXTURE: &[u8] = include_bytes!("fixtures/nf4.safetensors");

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn u8s(st: &SafeTensors<'_>, name: &str) -> Vec<u8> {
    st.tensor(name)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .data()
        .to_vec()
}

/// Rounds to the nearest bf16 (ties to even), as torch's f32 → bf16 cast does.
fn round_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    let rounding = 0x7fff + ((bits >> 16) & 1);
    f32::from_bits((bits + rounding) & 0xffff_0000)
}

fn shape(st: &SafeTensors<'_>, name: &str) -> [usize; 2] {
    let s = st
        .tensor(&format!("{name}.input"))
        .unwrap()
        .shape()
        .to_vec();
    [s[0], s[1]]
}

fn quantize(st: &SafeTensors<'_>, name: &str, double_quant: bool) -> Nf4Tensor {
    Nf4Tensor::quantize(
        &f32s(st, &format!("{name}.input")),
        shape(st, name),
        64,
        double_quant,
    )
    .unwrap()
}

#[test]
fn packed_codes_and_absmax_are_bit_exact() {
    let st = SafeTensors::deserialize(FIXTURE).unwrap();
    for name in ["square", "partial_block", "bf16", "outliers"] {
        let q = quantize(&st, name, false);
        assert_eq!(
            q.packed,
            u8s(&st, &format!("{name}.packed")),
            "{name}: packed codes"
        );
        let Absmax::Plain(absmax) = &q.absmax else {
            panic!("{name}: expected plain absmax")
        };
        let expected = f32s(&st, &format!("{name}.absmax"));
        assert_eq!(
            absmax.iter().map(|a| a.to_bits()).collect::<Vec<_>>(),
            expected.iter().map(|a| a.to_bits()).collect::<Vec<_>>(),
            "{name}: absmax"
        );
        // bitsandbytes dequantizes into the weight's dtype.
        let dq: Vec<f32> = if name == "bf16" {
            q.dequantize().into_iter().map(round_bf16).collect()
        } else {
            q.dequantize()
        };
        assert_eq!(
            dq,
            f32s(&st, &format!("{name}.dequantized")),
            "{name}: dequantized"
        );
    }
}

#[test]
fn double_quantization_is_bit_exact() {
    let st = SafeTensors::deserialize(FIXTURE).unwrap();
    let map = dynamic_map();
    let expected_map = f32s(&st, "double_quant.nested_code");
    assert_eq!(
        map.iter().map(|a| a.to_bits()).collect::<Vec<_>>(),
        expected_map.iter().map(|a| a.to_bits()).collect::<Vec<_>>(),
        "dynamic map"
    );
    let q = quantize(&st, "double_quant", true);
    assert_eq!(q.packed, u8s(&st, "double_quant.packed"), "packed codes");
    let Absmax::Double(d) = &q.absmax else {
        panic!("expected double quantization")
    };
    assert_eq!(
        d.offset.to_bits(),
        f32s(&st, "double_quant.offset")[0].to_bits(),
        "offset"
    );
    assert_eq!(
        d.nested_absmax,
        f32s(&st, "double_quant.nested_absmax"),
        "nested absmax"
    );
    assert_eq!(
        d.codes,
        u8s(&st, "double_quant.absmax_codes"),
        "absmax codes"
    );
    let dq = q.dequantize();
    let expected = f32s(&st, "double_quant.dequantized");
    let worst = dq
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-7, "dequantized differs by {worst}");
}

#[test]
fn device_dequantization_matches_host() {
    let st = SafeTensors::deserialize(FIXTURE).unwrap();
    let device = Default::default();
    for (name, dq) in [("partial_block", false), ("double_quant", true)] {
        let q = quantize(&st, name, dq);
        let on_device: Tensor<CpuBackend, 2> = q.to_device::<CpuBackend>(&device).dequantize();
        assert_eq!(on_device.dims(), q.shape);
        let values: Vec<f32> = on_device.into_data().to_vec().unwrap();
        assert_eq!(values, q.dequantize(), "{name}");
    }
}

#[test]
fn rejects_bad_block_sizes_and_non_finite_weights() {
    assert!(Nf4Tensor::quantize(&[0.0; 64], [1, 64], 48, false).is_err());
    let mut w = vec![0.5; 64];
    w[3] = f32::NAN;
    let err = Nf4Tensor::quantize(&w, [1, 64], 64, false).unwrap_err();
    assert!(err.to_string().contains("flat index 3"), "{err}");
}
