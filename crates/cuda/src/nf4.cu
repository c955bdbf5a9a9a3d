// NF4 dequantization to bf16: element 8k + j of the weight is code[(word[k] >> 4j) & 15] times
// the scale of its quantization block, rounded to bf16 (nearest, ties to even), which is what
// burn's `select` and multiply compute on bf16 tensors.
//
// Compiled at run time with NVRTC. Nothing is #included: bf16 values travel as `unsigned short`
// bits.
//
// Launch: nf4_dequantize over ceil(n_words / NF4_THREADS) blocks of NF4_THREADS threads, one
// thread per word (eight elements, one 16-byte store). The caller guarantees that the element
// count is n_words * 8, that a quantization block holds a whole number of words
// (words_per_block = blocksize / 8) and that `out` is 16-byte aligned.

#define NF4_THREADS 256

struct alignas(16) Bf16x8 {
    unsigned short v[8];
};

__device__ __forceinline__ float bf16_to_float(unsigned short bits) {
    return __uint_as_float(static_cast<unsigned>(bits) << 16);
}

__device__ __forceinline__ unsigned short float_to_bf16(float value) {
    unsigned bits = __float_as_uint(value);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return static_cast<unsigned short>(bits >> 16);
}

extern "C" __global__ void __launch_bounds__(NF4_THREADS)
nf4_dequantize(const unsigned* __restrict__ words, const unsigned short* __restrict__ absmax,
               const unsigned short* __restrict__ code, unsigned short* __restrict__ out,
               int n_words, int words_per_block) {
    __shared__ float table[16];
    if (threadIdx.x < 16) {
        table[threadIdx.x] = bf16_to_float(code[threadIdx.x]);
    }
    __syncthreads();
    const int k = blockIdx.x * NF4_THREADS + threadIdx.x;
    if (k >= n_words) {
        return;
    }
    const unsigned word = words[k];
    const float scale = bf16_to_float(absmax[k / words_per_block]);
    Bf16x8 values;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
        values.v[j] = float_to_bf16(table[(word >> (4 * j)) & 15u] * scale);
    }
    reinterpret_cast<Bf16x8*>(out)[k] = values;
}
