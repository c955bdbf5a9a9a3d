// Token-summed cross-entropy over the vocabulary, forward and backward, on bf16 logits with f32
// arithmetic: the loss never materialises log-probabilities, and the backward pass writes the
// logits' gradient in one pass from each row's log-sum-exp.
//
// Launched by cubecl on burn's stream: buffers first, the scalars last as one struct passed by
// value. bf16 values travel as `unsigned short` bits (helpers in `bf16.cuh`). Blocks of THREADS
// threads, 1-D:
//
//   kernel       grid    work
//   ce_fwd       rows    one row: its log-sum-exp and its weighted negative log-likelihood
//   ce_sum       1       the sum of the rows' terms (in a fixed order: deterministic)
//   ce_bwd       rows    one row of d logits = d loss · weight · (softmax − one_hot(label))
//
// With `vector` set (the vocabulary a multiple of 8 and the logits 16-byte aligned) rows are read
// and written 8 values at a time.

#define THREADS 256

struct Vocab {
    int rows, vocab, vector;
};

__device__ __forceinline__ float neg_inf() { return __uint_as_float(0xff800000u); }

// A running (max, sum of exp(x − max)) pair; `sum == 0` means empty.
struct Softmax {
    float max, sum;
};

__device__ __forceinline__ void add_value(Softmax& s, float x) {
    if (x > s.max) {
        s.sum = s.sum * __expf(s.max - x) + 1.f;
        s.max = x;
    } else {
        s.sum += __expf(x - s.max);
    }
}

__device__ __forceinline__ Softmax merge(Softmax a, Softmax b) {
    if (b.sum == 0.f) return a;
    if (a.sum == 0.f) return b;
    if (b.max > a.max) return Softmax{b.max, b.sum + a.sum * __expf(a.max - b.max)};
    return Softmax{a.max, a.sum + b.sum * __expf(b.max - a.max)};
}

// The eight bf16 values of a 16-byte chunk, in order.
__device__ __forceinline__ void unpack8(const U32x4& c, float (&v)[8]) {
    const unsigned w[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        v[2 * i] = __uint_as_float(w[i] << 16);
        v[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

// ln(sum(exp(row))) over the block; every thread gets it.
__device__ float row_log_sum_exp(const unsigned short* row, const Vocab& d) {
    __shared__ Softmax partial[THREADS / 32];
    Softmax s{neg_inf(), 0.f};
    if (d.vector) {
        const U32x4* chunks = reinterpret_cast<const U32x4*>(row);
        for (int c = threadIdx.x; c < d.vocab / 8; c += THREADS) {
            float v[8];
            unpack8(chunks[c], v);
#pragma unroll
            for (int i = 0; i < 8; ++i) add_value(s, v[i]);
        }
    } else {
        for (int i = threadIdx.x; i < d.vocab; i += THREADS) add_value(s, from_bf16(row[i]));
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
        const Softmax other{__shfl_xor_sync(0xffffffffu, s.max, offset),
                            __shfl_xor_sync(0xffffffffu, s.sum, offset)};
        s = merge(s, other);
    }
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = s;
    __syncthreads();
    Softmax total{neg_inf(), 0.f};
#pragma unroll
    for (int w = 0; w < THREADS / 32; ++w) total = merge(total, partial[w]);
    return total.max + __logf(total.sum);
}

// lse[r] and term[r] = −weight[r] · (logits[r, label[r]] − lse[r]); a row of weight 0 adds 0.
extern "C" __global__ void __launch_bounds__(THREADS)
ce_fwd(const unsigned short* __restrict__ logits, const int* __restrict__ labels,
       const unsigned short* __restrict__ weights, float* __restrict__ lse, float* __restrict__ term,
       const Vocab d) {
    const long long r = blockIdx.x;
    const unsigned short* row = logits + r * d.vocab;
    const float l = row_log_sum_exp(row, d);
    if (threadIdx.x == 0) {
        const float w = from_bf16(weights[r]);
        lse[r] = l;
        term[r] = w == 0.f ? 0.f : -w * (from_bf16(row[labels[r]]) - l);
    }
}

// out[0] = sum of term[0..rows): each thread sums a strided share, then the block in a fixed order.
extern "C" __global__ void __launch_bounds__(THREADS)
ce_sum(const float* __restrict__ term, float* __restrict__ out, const Vocab d) {
    __shared__ float partial[THREADS / 32];
    float acc = 0.f;
    for (int r = threadIdx.x; r < d.rows; r += THREADS) acc += term[r];
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float total = 0.f;
#pragma unroll
        for (int w = 0; w < THREADS / 32; ++w) total += partial[w];
        out[0] = total;
    }
}

// d logits[r, j] = d_loss · weight[r] · (exp(logits[r, j] − lse[r]) − [j == label[r]])
extern "C" __global__ void __launch_bounds__(THREADS)
ce_bwd(const unsigned short* __restrict__ logits, const int* __restrict__ labels,
       const unsigned short* __restrict__ weights, const float* __restrict__ lse,
       const float* __restrict__ d_loss, unsigned short* __restrict__ d_logits, const Vocab d) {
    const long long r = blockIdx.x;
    const unsigned short* row = logits + r * d.vocab;
    unsigned short* out = d_logits + r * d.vocab;
    const float g = d_loss[0] * from_bf16(weights[r]);
    const float l = lse[r];
    const int label = labels[r];
    if (d.vector) {
        const U32x4* chunks = reinterpret_cast<const U32x4*>(row);
        U32x4* out_chunks = reinterpret_cast<U32x4*>(out);
        for (int c = threadIdx.x; c < d.vocab / 8; c += THREADS) {
            float v[8];
            unpack8(chunks[c], v);
            unsigned short b[8];
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float p = g == 0.f ? 0.f : __expf(v[i] - l);
                b[i] = to_bf16(g * (p - (c * 8 + i == label ? 1.f : 0.f)));
            }
            out_chunks[c] = U32x4{b[0] | (unsigned)b[1] << 16, b[2] | (unsigned)b[3] << 16,
                                  b[4] | (unsigned)b[5] << 16, b[6] | (unsigned)b[7] << 16};
        }
    } else {
        for (int j = threadIdx.x; j < d.vocab; j += THREADS) {
            const float p = g == 0.f ? 0.f : __expf(from_bf16(row[j]) - l);
            out[j] = to_bf16(g * (p - (j == label ? 1.f : 0.f)));
        }
    }
}
