// The small operations of a decoder layer around its projections, forward and backward: RMSNorm
// (with a frozen weight), rotary embeddings fused with the split into heads, and SwiGLU. bf16 in
// and out, f32 arithmetic. Each replaces several of burn's operations, each of which costs host time
// as well as GPU time (BENCHMARKS.md, "The small operations as kernels").
//
// Launched by cubecl on burn's stream: buffers first, the scalars last as one struct passed by
// value. bf16 values travel as `unsigned short` bits (helpers in `bf16.cuh`). Every kernel runs 1-D
// blocks of THREADS threads:
//
//   kernel          grid                      work of one block
//   rms_norm_fwd    rows                      one row
//   rms_norm_bwd    rows                      one row
//   rotary_fwd      ceil(pairs / THREADS)     one (x[i], x[i + head_dim/2]) pair per thread
//   rotary_bwd      ceil(pairs / THREADS)     the same pairs of the gradient
//   swiglu_fwd      ceil(n / THREADS)         one element per thread
//   swiglu_bwd      ceil(n / THREADS)         one element per thread
//   dropout         ceil(n / 2 / THREADS)     two elements per thread
//
// with pairs = batch * len * heads * head_dim / 2.

#define THREADS 256

struct Rows {
    int rows, width;
    float eps;
};

// x is [batch, len, heads, head_dim] (the projection's output), y and its gradient
// [batch, heads, len, head_dim] (what attention reads), cos and sin [batch, len, head_dim].
struct Heads {
    int batch, len, heads, head_dim;
};

struct Count {
    int n;
};

// keep_below = keep · 2³² (saturated): an element is kept when its 32 random bits are below it.
struct Dropout {
    unsigned long long seed;
    int n;
    unsigned keep_below;
    float scale;  // 1 / keep, as PyTorch scales what dropout keeps
};

// The sum of `v` over the block, returned to every thread. `scratch` holds one float per warp;
// the leading barrier lets a second call reuse it.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
    __syncthreads();
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
    __syncthreads();
    float total = 0.f;
#pragma unroll
    for (int w = 0; w < THREADS / 32; ++w) total += scratch[w];
    return total;
}

// 1 / sqrt(mean(x²) + eps) of one row.
__device__ __forceinline__ float inverse_rms(const unsigned short* x, const Rows& d, float* scratch) {
    float squares = 0.f;
    for (int i = threadIdx.x; i < d.width; i += THREADS) {
        const float v = from_bf16(x[i]);
        squares = fmaf(v, v, squares);
    }
    return rsqrtf(block_sum(squares, scratch) / d.width + d.eps);
}

// y = w · bf16(x / rms(x)), as transformers rounds it: normalised in f32, scaled in bf16.
extern "C" __global__ void __launch_bounds__(THREADS)
rms_norm_fwd(const unsigned short* __restrict__ x, const unsigned short* __restrict__ weight,
             unsigned short* __restrict__ y, const Rows d) {
    __shared__ float scratch[THREADS / 32];
    const long long offset = (long long)blockIdx.x * d.width;
    const float r = inverse_rms(x + offset, d, scratch);
    for (int i = threadIdx.x; i < d.width; i += THREADS) {
        const float normed = from_bf16(to_bf16(from_bf16(x[offset + i]) * r));
        y[offset + i] = to_bf16(normed * from_bf16(weight[i]));
    }
}

// dx = r · (g − x̂ · mean(g · x̂)) with g = dy · w and x̂ = x · r; the weight is frozen.
extern "C" __global__ void __launch_bounds__(THREADS)
rms_norm_bwd(const unsigned short* __restrict__ x, const unsigned short* __restrict__ weight,
             const unsigned short* __restrict__ dy, unsigned short* __restrict__ dx, const Rows d) {
    __shared__ float scratch[THREADS / 32];
    const long long offset = (long long)blockIdx.x * d.width;
    const float r = inverse_rms(x + offset, d, scratch);
    float dot = 0.f;
    for (int i = threadIdx.x; i < d.width; i += THREADS) {
        const float g = from_bf16(dy[offset + i]) * from_bf16(weight[i]);
        dot = fmaf(g, from_bf16(x[offset + i]) * r, dot);
    }
    const float mean = block_sum(dot, scratch) / d.width;
    for (int i = threadIdx.x; i < d.width; i += THREADS) {
        const float g = from_bf16(dy[offset + i]) * from_bf16(weight[i]);
        const float normed = from_bf16(x[offset + i]) * r;
        dx[offset + i] = to_bf16(r * (g - normed * mean));
    }
}

// The pair a thread handles: the offsets of x[..., i] in the [batch, len, heads, head_dim]
// layout, in the [batch, heads, len, head_dim] layout and in the tables, where i < head_dim / 2.
struct Pair {
    long long split, heads, table;
};

__device__ __forceinline__ bool pair_of(long long p, const Heads& d, Pair& at) {
    const int half = d.head_dim / 2;
    const long long pairs = (long long)d.batch * d.len * d.heads * half;
    if (p >= pairs) return false;
    const int i = p % half;
    const int h = (p / half) % d.heads;
    const long long token = p / ((long long)half * d.heads);  // b * len + l
    const int l = token % d.len;
    const long long b = token / d.len;
    at.split = (token * d.heads + h) * d.head_dim + i;
    at.heads = ((b * d.heads + h) * d.len + l) * d.head_dim + i;
    at.table = token * d.head_dim + i;
    return true;
}

// y[i] = x[i]·cos[i] − x[i+half]·sin[i];  y[i+half] = x[i+half]·cos[i+half] + x[i]·sin[i+half]
extern "C" __global__ void __launch_bounds__(THREADS)
rotary_fwd(const unsigned short* __restrict__ x, const unsigned short* __restrict__ cos,
           const unsigned short* __restrict__ sin, unsigned short* __restrict__ y, const Heads d) {
    Pair at;
    if (!pair_of((long long)blockIdx.x * THREADS + threadIdx.x, d, at)) return;
    const int half = d.head_dim / 2;
    const float x1 = from_bf16(x[at.split]), x2 = from_bf16(x[at.split + half]);
    const float c1 = from_bf16(cos[at.table]), c2 = from_bf16(cos[at.table + half]);
    const float s1 = from_bf16(sin[at.table]), s2 = from_bf16(sin[at.table + half]);
    y[at.heads] = to_bf16(x1 * c1 - x2 * s1);
    y[at.heads + half] = to_bf16(x2 * c2 + x1 * s2);
}

// The transpose of the rotation: dx[i] = dy[i]·cos[i] + dy[i+half]·sin[i+half];
// dx[i+half] = dy[i+half]·cos[i+half] − dy[i]·sin[i].
extern "C" __global__ void __launch_bounds__(THREADS)
rotary_bwd(const unsigned short* __restrict__ dy, const unsigned short* __restrict__ cos,
           const unsigned short* __restrict__ sin, unsigned short* __restrict__ dx, const Heads d) {
    Pair at;
    if (!pair_of((long long)blockIdx.x * THREADS + threadIdx.x, d, at)) return;
    const int half = d.head_dim / 2;
    const float g1 = from_bf16(dy[at.heads]), g2 = from_bf16(dy[at.heads + half]);
    const float c1 = from_bf16(cos[at.table]), c2 = from_bf16(cos[at.table + half]);
    const float s1 = from_bf16(sin[at.table]), s2 = from_bf16(sin[at.table + half]);
    dx[at.split] = to_bf16(g1 * c1 + g2 * s2);
    dx[at.split + half] = to_bf16(g2 * c2 - g1 * s1);
}

__device__ __forceinline__ float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }

// out = silu(gate) · up
extern "C" __global__ void __launch_bounds__(THREADS)
swiglu_fwd(const unsigned short* __restrict__ gate, const unsigned short* __restrict__ up,
           unsigned short* __restrict__ out, const Count count) {
    const long long i = (long long)blockIdx.x * THREADS + threadIdx.x;
    if (i >= count.n) return;
    const float g = from_bf16(gate[i]);
    out[i] = to_bf16(g * sigmoid(g) * from_bf16(up[i]));
}

// d gate = d out · up · σ(g)·(1 + g·(1 − σ(g)));  d up = d out · silu(g)
extern "C" __global__ void __launch_bounds__(THREADS)
swiglu_bwd(const unsigned short* __restrict__ gate, const unsigned short* __restrict__ up,
           const unsigned short* __restrict__ dout, unsigned short* __restrict__ dgate,
           unsigned short* __restrict__ dup, const Count count) {
    const long long i = (long long)blockIdx.x * THREADS + threadIdx.x;
    if (i >= count.n) return;
    const float g = from_bf16(gate[i]), u = from_bf16(up[i]), d = from_bf16(dout[i]);
    const float s = sigmoid(g);
    dgate[i] = to_bf16(d * u * s * (1.f + g * (1.f - s)));
    dup[i] = to_bf16(d * g * s);
}

// splitmix64's output function: a bijection of 64-bit words whose outputs for consecutive inputs
// pass as independent uniform bits, so a mask needs no generator state, only a seed and an index.
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// y = x · mask · (1 / keep). The mask of elements 2t and 2t + 1 is the low and high half of
// mix64(seed + t · golden), so the backward pass gets the same mask by running this kernel on the
// gradient with the same seed, and nothing is stored between the two.
extern "C" __global__ void __launch_bounds__(THREADS)
dropout(const unsigned short* __restrict__ x, unsigned short* __restrict__ y, const Dropout d) {
    const long long t = (long long)blockIdx.x * THREADS + threadIdx.x;
    const long long i = 2 * t;
    if (i >= d.n) return;
    const unsigned long long bits = mix64(d.seed + (unsigned long long)t * 0x9e3779b97f4a7c15ull);
    const unsigned uniform[2] = {static_cast<unsigned>(bits), static_cast<unsigned>(bits >> 32)};
#pragma unroll
    for (int k = 0; k < 2; ++k) {
        if (i + k < d.n) y[i + k] = uniform[k] < d.keep_below ? to_bf16(from_bf16(x[i + k]) * d.scale) : 0;
    }
}
