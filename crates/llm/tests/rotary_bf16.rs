//! Rotary tables on a device that computes in bf16, as training on a GPU does. Its own test
//! binary: burn fixes a device's float type for the whole process.

use burn::backend::Flex;
use burn::tensor::{FloatDType, Int, IntDType, Tensor, TensorData, set_default_dtypes};
use tigerflow_llm::rope::Rotary;

/// Positions up to 4095 give cosines and sines within bf16's rounding of the exact ones (2^-8,
/// as no value exceeds 1). The angles themselves must not be rounded to bf16, which stores 4095
/// as 4096: the fastest pair would turn by a whole radian too many.
#[test]
fn the_angles_keep_f32_precision_when_the_device_computes_in_bf16() {
    let device = Default::default();
    set_default_dtypes::<Flex>(&device, FloatDType::BF16, IntDType::I64)
        .expect("the first use of the CPU device in this process");
    let inv_freq: Vec<f32> = (0..4)
        .map(|i| 1.0 / 10_000f32.powf(2.0 * i as f32 / 8.0))
        .collect();
    let positions = [0i64, 1, 255, 257, 1000, 2049, 4095];
    let ids = Tensor::<Flex, 2, Int>::from_data(
        TensorData::new(positions.to_vec(), [1, positions.len()]),
        &device,
    );
    let rotary = Rotary::new(&inv_freq, ids);
    let values = |t: Tensor<Flex, 4>| -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .into_vec()
            .expect("a float tensor")
    };
    let (cos, sin) = (values(rotary.cos), values(rotary.sin));
    for (p, &position) in positions.iter().enumerate() {
        for d in 0..8 {
            let angle = position as f64 * f64::from(inv_freq[d % 4]);
            let at = p * 8 + d;
            for (name, got, want) in [("cos", cos[at], angle.cos()), ("sin", sin[at], angle.sin())]
            {
                assert!(
                    (f64::from(got) - want).abs() <= 1.0 / 256.0,
                    "{name} at position {position}, dim {d}: {got} against {want}"
                );
            }
        }
    }
}
