// FlashAttention-2 style causal attention with packed-sequence segments, bf16 in and out,
// f32 accumulation, tensor cores through mma.sync m16n8k16 (sm_80+, built for sm_90).
//
// Compiled at run time with NVRTC, once per head dimension: HEAD_DIM is defined as 64 or 128
// (by a #define put before this text, or -DHEAD_DIM=64).
// bf16 values travel as `unsigned short` bits (helpers and U32x4 in `bf16.cuh`).
//
// Launch table. Every kernel runs blocks of NUM_THREADS = 128 threads (4 warps), 1-D. Buffers
// come first; the scalars follow as one struct passed by value (`Dims` or `Count`), which is
// how cubecl launches a kernel on burn's stream.
//
//   kernel            grid                                   dynamic shared memory (bytes)
//   flash_fwd         (len / BLOCK_M, batch * heads)         FWD_SMEM_BYTES
//                       = 4 * BLOCK_N * HEAD_DIM * 2 + 2 * BLOCK_N * 4
//                       = 512 * HEAD_DIM + 512      ->  33280 (D=64), 66048 (D=128)
//   flash_bwd_delta   (ceil(rows / DELTA_ROWS_PER_BLOCK))    0       DELTA_ROWS_PER_BLOCK = 16
//   flash_bwd         (len / BLOCK_N, batch * kv_heads)      BWD_SMEM_BYTES
//                       = (2 * BLOCK_N + 2 * BLOCK_M) * HEAD_DIM * 2 + BLOCK_M * BLOCK_N * 2
//                         + 3 * BLOCK_M * 4
//                       = 512 * HEAD_DIM + 8960     ->  41728 (D=64), 74496 (D=128)
//   flash_bwd_dq      (ceil(n / DQ_ELEMS_PER_BLOCK))         0       DQ_ELEMS_PER_BLOCK = 1024
//
// with BLOCK_M = BLOCK_N = 64. The launcher sets CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
// of flash_fwd and flash_bwd to their byte counts (both exceed the 48 KiB default for D=128).
//
// Backward sequence: flash_bwd_delta (which also zeroes dq_accum), flash_bwd, flash_bwd_dq.
//
// Visibility: query i of row b sees key j iff j <= i and seg[b,i] == seg[b,j]. Segment ids are
// non-decreasing along a row except for trailing padding (-1), which sees only padding.
//
// Layouts. q, k, dq_accum and dk are head-major, [batch, heads, len, HEAD_DIM]: the rotary
// kernel writes q and k so and reads their gradients so. v, out, dout and dv are token-major,
// [batch, len, heads, HEAD_DIM], the layout of the projections on either side, so that no copy
// moves them between the two. lse and delta are [batch, heads, len].

#ifndef HEAD_DIM
#error "compile with -DHEAD_DIM=64 or -DHEAD_DIM=128"
#endif
#if HEAD_DIM != 64 && HEAD_DIM != 128
#error "HEAD_DIM must be 64 or 128"
#endif

#define BLOCK_M 64
#define BLOCK_N 64
#define NUM_THREADS 128
#define DELTA_ROWS_PER_BLOCK 16
#define DQ_ELEMS_PER_BLOCK 1024
#define DQ_ELEMS_PER_THREAD (DQ_ELEMS_PER_BLOCK / NUM_THREADS)
// Stated occupancy target of the two attention kernels (their register budget is 255 either way).
// Measured on H100: without it ptxas packs flash_fwd into fewer registers and keeps fewer
// ldmatrix results in flight, which costs about 20% at HEAD_DIM=128.
#define MIN_BLOCKS_PER_SM 2

#define FWD_SMEM_BYTES (4 * BLOCK_N * HEAD_DIM * 2 + 2 * BLOCK_N * 4)
#define BWD_SMEM_BYTES ((2 * BLOCK_N + 2 * BLOCK_M) * HEAD_DIM * 2 + BLOCK_M * BLOCK_N * 2 + 3 * BLOCK_M * 4)

// The warp layout below gives each of the 4 warps 16 rows of a 64-row tile.
static_assert(BLOCK_M == 64 && BLOCK_N == 64 && NUM_THREADS == 128, "warp layout assumes 64x64 tiles");
static_assert(FWD_SMEM_BYTES <= 96 * 1024 && BWD_SMEM_BYTES <= 96 * 1024, "shared memory budget");

constexpr int kChunks = HEAD_DIM / 8;            // 16-byte chunks in one row of a head tile
constexpr int kTileBytes = 64 * HEAD_DIM * 2;    // one 64-row bf16 tile of q, k, v or dout
constexpr int kDsChunks = BLOCK_M / 8;           // 16-byte chunks in one row of the dS^T tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// The scalar arguments of flash_fwd and flash_bwd.
struct Dims {
    int batch, heads, kv_heads, len;
    float scale;
};

// The scalar argument of flash_bwd_dq: how many elements there are.
struct Count {
    int n;
};

struct alignas(16) F32x4 {
    float x, y, z, w;
};

// ---------------------------------------------------------------------------------------------
// Thin wrappers over the PTX instructions used.

__device__ __forceinline__ unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// .cg: the tiles are consumed from shared memory, so keep them out of L1.
__device__ __forceinline__ void cp_async_16(unsigned dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

__device__ __forceinline__ void ldsm_x4_trans(unsigned (&r)[4], unsigned addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr)
                 : "memory");
}

// c += a * b for one 16x8x16 tile; a is row-major 16x16, b column-major 16x8.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// The lower half holds `lo`, which is the element of smaller index in every fragment layout.
__device__ __forceinline__ unsigned pack_bf16x2(float lo, float hi) {
    unsigned r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// Dot product of 8 bf16 pairs (one 16-byte chunk of each operand).
__device__ __forceinline__ float dot_bf16x8(const U32x4& a, const U32x4& b) {
    const unsigned wa[4] = {a.x, a.y, a.z, a.w};
    const unsigned wb[4] = {b.x, b.y, b.z, b.w};
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        acc = fmaf(__uint_as_float(wa[i] << 16), __uint_as_float(wb[i] << 16), acc);
        acc = fmaf(__uint_as_float(wa[i] & 0xffff0000u), __uint_as_float(wb[i] & 0xffff0000u), acc);
    }
    return acc;
}

__device__ __forceinline__ float neg_inf() { return __uint_as_float(0xff800000u); }

// ex2(-inf) = +0, which is what masked scores rely on.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ float fast_log2(float x) {
    float y;
    asm("lg2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

// Two adjacent f32 additions in one vector reduction (sm_90): half the atomic instructions.
__device__ __forceinline__ void red_add_f32x2(float* addr, float a, float b) {
    asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(addr), "f"(a), "f"(b) : "memory");
}

// ---------------------------------------------------------------------------------------------
// Shared-memory tiles are rows of 16-byte chunks; chunk c of row r is stored at c ^ (r & 7).
// ldmatrix reads the same logical chunk of 8 consecutive rows, which the XOR spreads over all
// 32 banks; cp.async and the fragment stores stay conflict-free too.

__device__ __forceinline__ unsigned swizzle(int row, int chunk, int chunks_per_row) {
    return static_cast<unsigned>((row * chunks_per_row + (chunk ^ (row & 7))) * 16);
}

// Starts copying 64 rows of HEAD_DIM bf16, `stride` elements apart (HEAD_DIM head-major,
// heads * HEAD_DIM token-major), into a swizzled tile. Each pass covers a multiple of 8 rows, so a
// thread's swizzled chunk is the same on every pass and all its copies are one base address plus
// constants.
constexpr int kRowsPerPass = NUM_THREADS / kChunks;
static_assert(kRowsPerPass % 8 == 0, "loader passes must keep the swizzle phase");

__device__ __forceinline__ void load_tile_async(unsigned tile, const unsigned short* src, int stride) {
    const int row = threadIdx.x / kChunks, chunk = threadIdx.x % kChunks;
    const unsigned dst = tile + swizzle(row, chunk, kChunks);
    const unsigned short* from = src + (long long)row * stride + chunk * 8;
#pragma unroll
    for (int pass = 0; pass < 64 / kRowsPerPass; ++pass)
        cp_async_16(dst + pass * kRowsPerPass * HEAD_DIM * 2, from + (long long)pass * kRowsPerPass * stride);
}

// Starts copying 64 consecutive 4-byte values (segment ids, lse or delta of one tile).
__device__ __forceinline__ void load_row64_async(unsigned dst, const void* src) {
    if (threadIdx.x < 16)
        cp_async_16(dst + threadIdx.x * 16, static_cast<const char*>(src) + threadIdx.x * 16);
}

// Writes a warp's 16 x HEAD_DIM accumulator (mma C layout, rows scaled by row_scale) as bf16
// rows `stride` elements apart to global memory, staged through the warp's own 16 rows of a swizzled tile so the global
// stores are whole 16-byte chunks.
__device__ __forceinline__ void store_warp_rows(const float (&acc)[HEAD_DIM / 8][4], const float (&row_scale)[2],
                                                unsigned char* tile, unsigned short* dst, int stride) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int dt = 0; dt < HEAD_DIM / 8; ++dt) {
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            const int row = warp * 16 + lane / 4 + 8 * r;
            *reinterpret_cast<unsigned*>(tile + swizzle(row, dt, kChunks) + (lane % 4) * 4) =
                pack_bf16x2(acc[dt][2 * r] * row_scale[r], acc[dt][2 * r + 1] * row_scale[r]);
        }
    }
    __syncwarp();
#pragma unroll
    for (int i = lane; i < 16 * kChunks; i += 32) {
        const int row = warp * 16 + i / kChunks, chunk = i % kChunks;
        *reinterpret_cast<U32x4*>(dst + (long long)row * stride + chunk * 8) =
            *reinterpret_cast<const U32x4*>(tile + swizzle(row, chunk, kChunks));
    }
}

// ldmatrix.x4 addressing of one lane into a swizzled tile: the lane supplies row `row` (plus any
// multiple of 8) at chunk 2p + half, for chunk pairs p. Rows 8 apart share the swizzle phase and
// the XOR with row & 7 only permutes the low 3 bits of the chunk, so 4 offsets computed once cover
// every p; the rest of each address is an immediate.
struct LdsmLane {
    unsigned base[4];
    __device__ __forceinline__ LdsmLane(unsigned tile, int row, int half, int chunks_per_row) {
#pragma unroll
        for (int m = 0; m < 4; ++m)
            base[m] = tile + static_cast<unsigned>((row * chunks_per_row + ((2 * m + half) ^ (row & 7))) * 16);
    }
    // Chunk pair p of row `row + row_delta`; row_delta must be a multiple of 8.
    __device__ __forceinline__ unsigned at(int row_delta, int p, int chunks_per_row) const {
        return base[p & 3] + (p >> 2) * 128 + row_delta * chunks_per_row * 16;
    }
};

// The three lane patterns of ldmatrix.x4 used here (matrices 0..3 take lanes 8i..8i+7):
// A operand, 16x16 from [m][k] rows;
__device__ __forceinline__ LdsmLane ldsm_a_lane(unsigned tile, int first_row, int chunks_per_row) {
    const int lane = threadIdx.x % 32;
    return LdsmLane(tile, first_row + (lane & 15), lane >> 4, chunks_per_row);
}
// two B operands (n-tiles of 8) from [n][k] rows, non-transposed; also the A operand from
// [k][m] rows when loaded with .trans;
__device__ __forceinline__ LdsmLane ldsm_b_lane(unsigned tile, int chunks_per_row) {
    const int lane = threadIdx.x % 32;
    return LdsmLane(tile, (lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1, chunks_per_row);
}
// two B operands from [k][n] rows, loaded with .trans.
__device__ __forceinline__ LdsmLane ldsm_bt_lane(unsigned tile, int chunks_per_row) {
    const int lane = threadIdx.x % 32;
    return LdsmLane(tile, (lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4, chunks_per_row);
}

// Two independent products of the form acc[8][4] (16 rows x 64 columns, mma C layout) =
// A_rows · B_rowsᵀ, where A_rows are the warp's 16 rows of one tile and B_rows all 64 rows of
// another, both HEAD_DIM wide, given as lane addresses plus byte offsets. Computing them in one
// loop doubles the independent ldmatrix/mma chains the scheduler can overlap. Serves Sᵀ = K·Qᵀ
// together with dPᵀ = V·dOᵀ in the backward pass.
__device__ __forceinline__ void two_rows_times_rows_t(float (&acc1)[8][4], unsigned a1_offset, unsigned b1_offset,
                                                      float (&acc2)[8][4], unsigned a2_offset, unsigned b2_offset,
                                                      const LdsmLane& a, const LdsmLane& b) {
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
        acc1[nt][0] = acc1[nt][1] = acc1[nt][2] = acc1[nt][3] = 0.f;
        acc2[nt][0] = acc2[nt][1] = acc2[nt][2] = acc2[nt][3] = 0.f;
    }
#pragma unroll
    for (int ks = 0; ks < HEAD_DIM / 16; ++ks) {
        unsigned af1[4], af2[4];
        ldsm_x4(af1, a.at(0, ks, kChunks) + a1_offset);
        ldsm_x4(af2, a.at(0, ks, kChunks) + a2_offset);
#pragma unroll
        for (int np = 0; np < 4; ++np) {
            unsigned bf1[4], bf2[4];
            ldsm_x4(bf1, b.at(np * 16, ks, kChunks) + b1_offset);
            ldsm_x4(bf2, b.at(np * 16, ks, kChunks) + b2_offset);
            mma_bf16(acc1[2 * np], af1, bf1[0], bf1[1]);
            mma_bf16(acc1[2 * np + 1], af1, bf1[2], bf1[3]);
            mma_bf16(acc2[2 * np], af2, bf2[0], bf2[1]);
            mma_bf16(acc2[2 * np + 1], af2, bf2[2], bf2[3]);
        }
    }
}

// acc (16 x HEAD_DIM) += frag (16 x 16, A fragment) · rows k0..k0+15 of a tile (16 x HEAD_DIM),
// given the tile's ldsm_bt_lane plus a byte offset. Serves O += P·V (forward), dV += Pᵀ·dO,
// dK += dSᵀ·Q and dQ += dS·K (backward).
__device__ __forceinline__ void frag_times_rows(float (&acc)[HEAD_DIM / 8][4], const unsigned (&frag)[4],
                                                const LdsmLane& b, unsigned offset, int k0) {
#pragma unroll
    for (int dp = 0; dp < HEAD_DIM / 16; ++dp) {
        unsigned bf[4];
        ldsm_x4_trans(bf, b.at(k0, dp, kChunks) + offset);
        mma_bf16(acc[2 * dp], frag, bf[0], bf[1]);
        mma_bf16(acc[2 * dp + 1], frag, bf[2], bf[3]);
    }
}

// Columns 16j..16j+15 of a 16x64 C-layout accumulator, rounded to bf16, as an A fragment: the
// C layout of two adjacent n-tiles is exactly the A layout of one k-step.
__device__ __forceinline__ void c_to_a_frag(unsigned (&frag)[4], const float (&acc)[8][4], int j) {
    frag[0] = pack_bf16x2(acc[2 * j][0], acc[2 * j][1]);
    frag[1] = pack_bf16x2(acc[2 * j][2], acc[2 * j][3]);
    frag[2] = pack_bf16x2(acc[2 * j + 1][0], acc[2 * j + 1][1]);
    frag[3] = pack_bf16x2(acc[2 * j + 1][2], acc[2 * j + 1][3]);
}

// ---------------------------------------------------------------------------------------------
// Forward: one block per (64-query tile, batch*head). Each warp owns 16 query rows; Q stays in
// registers, K/V tiles are double-buffered through cp.async, and P never leaves registers.

extern "C" __global__ void __launch_bounds__(NUM_THREADS, MIN_BLOCKS_PER_SM)
flash_fwd(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
          const unsigned short* __restrict__ v, const int* __restrict__ seg, unsigned short* __restrict__ out,
          float* __restrict__ lse, const Dims dims) {
    const int heads = dims.heads, kv_heads = dims.kv_heads, len = dims.len;
    const float scale = dims.scale;
    extern __shared__ __align__(128) unsigned char smem[];
    // Layout: K stage 0 | K stage 1 | V stage 0 | V stage 1 | key segment ids [2][64]. Q passes
    // through V stage 1 on its way to registers, which no key tile uses before the first prefetch.
    const unsigned smem_base = smem_u32(smem);
    const unsigned s_k = smem_base;
    const unsigned s_v = smem_base + 2 * kTileBytes;
    const unsigned s_q = s_v + kTileBytes;
    const unsigned s_seg_k = smem_base + 4 * kTileBytes;
    const int* seg_k_tiles = reinterpret_cast<const int*>(smem + 4 * kTileBytes);

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    // The diagonal-most query tiles have the most work: hand them out first to shorten the tail.
    const int q_tile = gridDim.x - 1 - blockIdx.x;
    const int bh = blockIdx.y;
    const int b = bh / heads;
    const int kv_head = (bh - b * heads) / (heads / kv_heads);
    const int q0 = q_tile * BLOCK_M;
    const long long q_offset = ((long long)bh * len + q0) * HEAD_DIM;
    const long long k_offset = (long long)(b * kv_heads + kv_head) * len * HEAD_DIM;
    const long long v_offset = (long long)b * len * kv_heads * HEAD_DIM + kv_head * HEAD_DIM;
    const long long out_offset = ((long long)b * len + q0) * heads * HEAD_DIM + (bh - b * heads) * HEAD_DIM;
    const int* seg_row = seg + (long long)b * len;

    const int seg_first_q = seg_row[q0];
    const int seg_last_q = seg_row[q0 + BLOCK_M - 1];
    const int row_in_tile = warp * 16 + lane / 4;  // this thread's rows: row_in_tile and row_in_tile + 8
    const int seg_q[2] = {seg_row[q0 + row_in_tile], seg_row[q0 + row_in_tile + 8]};

    auto load_key_tile = [&](int stage, int key_tile) {
        const long long key0 = (long long)key_tile * BLOCK_N;
        load_tile_async(s_k + stage * kTileBytes, k + k_offset + key0 * HEAD_DIM, HEAD_DIM);
        load_tile_async(s_v + stage * kTileBytes, v + v_offset + key0 * kv_heads * HEAD_DIM, kv_heads * HEAD_DIM);
        load_row64_async(s_seg_k + stage * BLOCK_N * 4, seg_row + key_tile * BLOCK_N);
    };

    load_tile_async(s_q, q + q_offset, HEAD_DIM);
    load_key_tile(0, q_tile);
    cp_async_commit();

    // Key tiles strictly before the query tile are skippable when 0 <= seg[last key] < seg[first
    // query]. Segment ids only grow, so the skippable tiles form a prefix; counting them here,
    // while the first tiles load, keeps global reads off the loop's critical path.
    int first_key_tile = 0;
    for (int base = 0; base < q_tile; base += NUM_THREADS) {
        const int t = base + threadIdx.x;
        bool skippable = false;
        if (t < q_tile) {
            const int seg_last_key = seg_row[t * BLOCK_N + BLOCK_N - 1];
            skippable = seg_last_key >= 0 && seg_last_key < seg_first_q;
        }
        first_key_tile += __syncthreads_count(skippable);
    }
    cp_async_wait<0>();
    __syncthreads();
    unsigned qf[HEAD_DIM / 16][4];
    {
        const LdsmLane q_lane = ldsm_a_lane(s_q, warp * 16, kChunks);
#pragma unroll
        for (int ks = 0; ks < HEAD_DIM / 16; ++ks)
            ldsm_x4(qf[ks], q_lane.at(0, ks, kChunks));
    }
    const LdsmLane k_lane = ldsm_b_lane(s_k, kChunks);
    const LdsmLane v_lane = ldsm_bt_lane(s_v, kChunks);

    float o[HEAD_DIM / 8][4];
#pragma unroll
    for (int dt = 0; dt < HEAD_DIM / 8; ++dt)
        o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    // Running max of the raw scores q·k (not scaled) and this thread's partial sum of exp, per row.
    float row_max[2] = {neg_inf(), neg_inf()};
    float row_sum[2] = {0.f, 0.f};
    const float scale_log2 = scale * kLog2e;

    // Key tiles run from the diagonal back to first_key_tile. The diagonal comes first so that
    // every row has a finite max from the first step on (each query sees itself).
    int key_tile = q_tile, stage = 0;
    while (true) {
        // One barrier per tile: it publishes the tile that every thread waited for at the end of
        // the last pass, and frees the other stage (last tile, or Q) for the next prefetch.
        __syncthreads();
        const int next = key_tile - 1;
        const bool has_next = next >= first_key_tile;
        if (has_next) {
            load_key_tile(stage ^ 1, next);
            cp_async_commit();
        }

        // S = Q·Kᵀ for this warp's 16 rows, kept in registers.
        float s[8][4];
#pragma unroll
        for (int nt = 0; nt < 8; ++nt)
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
        const unsigned stage_offset = stage * kTileBytes;
#pragma unroll
        for (int ks = 0; ks < HEAD_DIM / 16; ++ks) {
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                unsigned bf[4];
                ldsm_x4(bf, k_lane.at(np * 16, ks, kChunks) + stage_offset);
                mma_bf16(s[2 * np], qf[ks], bf[0], bf[1]);
                mma_bf16(s[2 * np + 1], qf[ks], bf[2], bf[3]);
            }
        }

        // Element-wise masking, needed on the diagonal and where the tile spans segment borders.
        const int* seg_k = seg_k_tiles + stage * BLOCK_N;
        if (key_tile == q_tile || seg_k[0] != seg_last_q) {
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = nt * 8 + 2 * (lane % 4) + e;
                    const int key = key_tile * BLOCK_N + col;
#pragma unroll
                    for (int r = 0; r < 2; ++r) {
                        const bool visible = (key <= q0 + row_in_tile + 8 * r) & (seg_k[col] == seg_q[r]);
                        s[nt][2 * r + e] = visible ? s[nt][2 * r + e] : neg_inf();
                    }
                }
            }
        }

        // Online softmax; a row's 64 columns are spread over the 4 threads of a quad.
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            float tile_max = row_max[r];
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
                tile_max = fmaxf(tile_max, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
            tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
            const float correction = fast_exp2((row_max[r] - tile_max) * scale_log2);
            row_max[r] = tile_max;
            const float offset = tile_max * scale_log2;
            float sum = 0.f;
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const float p = fast_exp2(fmaf(s[nt][2 * r + e], scale_log2, -offset));
                    s[nt][2 * r + e] = p;
                    sum += p;
                }
            }
            row_sum[r] = row_sum[r] * correction + sum;
#pragma unroll
            for (int dt = 0; dt < HEAD_DIM / 8; ++dt) {
                o[dt][2 * r] *= correction;
                o[dt][2 * r + 1] *= correction;
            }
        }

        // O += P·V with P taken straight from the score registers as the A operand.
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            unsigned pf[4];
            c_to_a_frag(pf, s, j);
            frag_times_rows(o, pf, v_lane, stage_offset, j * 16);
        }

        if (!has_next) break;
        cp_async_wait<0>();
        key_tile = next;
        stage ^= 1;
    }

    float inv_sum[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        float sum = row_sum[r];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        inv_sum[r] = 1.f / sum;
        if (lane % 4 == 0)
            lse[(long long)bh * len + q0 + row_in_tile + 8 * r] = (row_max[r] * scale_log2 + fast_log2(sum)) * kLn2;
    }
    // Nobody reads the other stage any more (no prefetch went there after the last barrier).
    store_warp_rows(o, inv_sum, smem + (stage ^ 1) * kTileBytes, out + out_offset, heads * HEAD_DIM);
}

// ---------------------------------------------------------------------------------------------
// delta[r] = sum_d out[r,d] * dout[r,d] for the rows r = (b, h, l) of lse; 8 threads per row, 16
// rows per block. The same threads zero row r of dq_accum, which flash_bwd then accumulates into
// (one launch fewer than a memset).

extern "C" __global__ void __launch_bounds__(NUM_THREADS)
flash_bwd_delta(const unsigned short* __restrict__ out, const unsigned short* __restrict__ dout,
                float* __restrict__ delta, float* __restrict__ dq_accum, const Dims dims) {
    const int part = threadIdx.x % 8;
    const long long row = (long long)blockIdx.x * DELTA_ROWS_PER_BLOCK + threadIdx.x / 8;
    const long long rows = (long long)dims.batch * dims.heads * dims.len;
    float acc = 0.f;
    if (row < rows) {
        const long long bh = row / dims.len, l = row - bh * dims.len, b = bh / dims.heads;
        const long long token = ((b * dims.len + l) * dims.heads + (bh - b * dims.heads)) * HEAD_DIM;
        const U32x4* o = reinterpret_cast<const U32x4*>(out + token);
        const U32x4* g = reinterpret_cast<const U32x4*>(dout + token);
        F32x4* dq_row = reinterpret_cast<F32x4*>(dq_accum + row * HEAD_DIM);
#pragma unroll
        for (int c = part; c < kChunks; c += 8) {
            acc += dot_bf16x8(o[c], g[c]);
            dq_row[2 * c] = F32x4{0.f, 0.f, 0.f, 0.f};
            dq_row[2 * c + 1] = F32x4{0.f, 0.f, 0.f, 0.f};
        }
    }
    acc += __shfl_xor_sync(0xffffffffu, acc, 4);
    acc += __shfl_xor_sync(0xffffffffu, acc, 2);
    acc += __shfl_xor_sync(0xffffffffu, acc, 1);
    if (part == 0 && row < rows) delta[row] = acc;
}

// ---------------------------------------------------------------------------------------------
// Backward: one block per (64-key tile, batch*kv_head). Each warp owns 16 keys and keeps their
// dK and dV rows in registers across all query heads of the group and all query tiles that can
// see the key tile, so dk/dv need no atomics. Per query tile:
//   phase 1 (per warp, its 16 keys x 64 queries): Sᵀ = K·Qᵀ, Pᵀ = exp(scale·Sᵀ − lse),
//     dV += Pᵀ·dO, dPᵀ = V·dOᵀ, dSᵀ = Pᵀ∘(dPᵀ − delta), dK += dSᵀ·Q; dSᵀ goes to shared memory;
//   phase 2 (per warp, 16 queries x 64 keys): dQ += scale·dS·K into dq_accum with atomics,
//     overlapped with the copy of the next query tile (phase 1 no longer needs the buffers).
// dK and dQ both carry the factor scale, so it is folded into dS once.

extern "C" __global__ void __launch_bounds__(NUM_THREADS, MIN_BLOCKS_PER_SM)
flash_bwd(const unsigned short* __restrict__ q, const unsigned short* __restrict__ k,
          const unsigned short* __restrict__ v, const int* __restrict__ seg, const unsigned short* __restrict__ dout,
          const float* __restrict__ lse, const float* __restrict__ delta, float* __restrict__ dq_accum,
          unsigned short* __restrict__ dk, unsigned short* __restrict__ dv, const Dims dims) {
    const int heads = dims.heads, kv_heads = dims.kv_heads, len = dims.len;
    const float scale = dims.scale;
    extern __shared__ __align__(128) unsigned char smem[];
    // Layout: K | V | Q | dO | dSᵀ [64 keys][64 queries] | lse | delta | query segment ids.
    constexpr int kOffK = 0, kOffV = kTileBytes, kOffQ = 2 * kTileBytes, kOffDo = 3 * kTileBytes;
    constexpr int kOffDs = 4 * kTileBytes;
    constexpr int kOffLse = kOffDs + BLOCK_N * BLOCK_M * 2;
    constexpr int kOffDelta = kOffLse + BLOCK_M * 4;
    constexpr int kOffSegQ = kOffDelta + BLOCK_M * 4;
    const unsigned smem_base = smem_u32(smem);
    const unsigned s_k = smem_base + kOffK, s_v = smem_base + kOffV;
    const unsigned s_q = smem_base + kOffQ, s_do = smem_base + kOffDo, s_ds = smem_base + kOffDs;
    const float* lse_tile = reinterpret_cast<const float*>(smem + kOffLse);
    const float* delta_tile = reinterpret_cast<const float*>(smem + kOffDelta);
    const int* seg_q_tile = reinterpret_cast<const int*>(smem + kOffSegQ);

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int key_tile = blockIdx.x;
    const int b = blockIdx.y / kv_heads;
    const int kv_head = blockIdx.y - b * kv_heads;
    const int group = heads / kv_heads;
    const int head_end = (kv_head + 1) * group;
    const int num_tiles = len / BLOCK_M;
    const int k0 = key_tile * BLOCK_N;
    const long long k_offset = ((long long)(b * kv_heads + kv_head) * len + k0) * HEAD_DIM;
    const long long v_offset = ((long long)b * len + k0) * kv_heads * HEAD_DIM + kv_head * HEAD_DIM;
    const int* seg_row = seg + (long long)b * len;

    const int seg_first_k = seg_row[k0];
    const int seg_last_k = seg_row[k0 + BLOCK_N - 1];
    const int key_in_tile = warp * 16 + lane / 4;  // this thread's keys: key_in_tile and key_in_tile + 8
    const int seg_k[2] = {seg_row[k0 + key_in_tile], seg_row[k0 + key_in_tile + 8]};

    auto load_query_tile = [&](int head, int query_tile) {
        const long long row0 = (long long)(b * heads + head) * len + query_tile * BLOCK_M;
        const long long token0 = (long long)b * len + query_tile * BLOCK_M;
        load_tile_async(s_q, q + row0 * HEAD_DIM, HEAD_DIM);
        load_tile_async(s_do, dout + token0 * heads * HEAD_DIM + head * HEAD_DIM, heads * HEAD_DIM);
        load_row64_async(smem_base + kOffLse, lse + row0);
        load_row64_async(smem_base + kOffDelta, delta + row0);
        load_row64_async(smem_base + kOffSegQ, seg_row + query_tile * BLOCK_M);
    };

    load_tile_async(s_k, k + k_offset, HEAD_DIM);
    load_tile_async(s_v, v + v_offset, kv_heads * HEAD_DIM);
    int head = kv_head * group, query_tile = key_tile;  // the diagonal tile is always visible
    load_query_tile(head, query_tile);
    cp_async_commit();

    // Query tiles after the key tile are skippable when 0 <= seg[last key] < seg[first query].
    // Along a row the first queries of the tiles after the key tile are: still the key tile's
    // last segment (visible), later segments (skippable), then padding (visible to padding keys,
    // and never skippable). So the skippable tiles form one run [skip_begin, skip_end), counted
    // here while the first tiles load, which keeps global reads out of the loop.
    int same_segment_tiles = 0, skippable_tiles = 0;
    for (int base = key_tile + 1; base < num_tiles; base += NUM_THREADS) {
        const int t = base + threadIdx.x;
        bool same = false, skippable = false;
        if (t < num_tiles) {
            const int seg_first_query = seg_row[t * BLOCK_M];
            skippable = seg_last_k >= 0 && seg_last_k < seg_first_query;
            same = !skippable && seg_first_query >= 0;
        }
        same_segment_tiles += __syncthreads_count(same);
        skippable_tiles += __syncthreads_count(skippable);
    }
    const int skip_begin = key_tile + 1 + same_segment_tiles;
    const int skip_end = skip_begin + skippable_tiles;

    float dk_acc[HEAD_DIM / 8][4], dv_acc[HEAD_DIM / 8][4];
#pragma unroll
    for (int dt = 0; dt < HEAD_DIM / 8; ++dt) {
        dk_acc[dt][0] = dk_acc[dt][1] = dk_acc[dt][2] = dk_acc[dt][3] = 0.f;
        dv_acc[dt][0] = dv_acc[dt][1] = dv_acc[dt][2] = dv_acc[dt][3] = 0.f;
    }
    const float scale_log2 = scale * kLog2e;
    // One set of lane addresses per pattern, relative to the K tile: the other tiles are constant
    // offsets away.
    const LdsmLane rows_lane = ldsm_a_lane(s_k, warp * 16, kChunks);
    const LdsmLane cols_lane = ldsm_b_lane(s_k, kChunks);
    const LdsmLane k_major_lane = ldsm_bt_lane(s_k, kChunks);
    // Phase 2 reads dS as A fragments of this warp's 16 queries (columns 16*warp.. of the dSᵀ
    // rows) with ldmatrix.trans, in the ldsm_b_lane pattern; rows advance by 16 per k-step.
    const unsigned ds_t_addr =
        s_ds + swizzle((lane & 7) + ((lane >> 4) << 3), 2 * warp + ((lane >> 3) & 1), kDsChunks);

    while (true) {
        cp_async_wait<0>();
        __syncthreads();
        const int m0 = query_tile * BLOCK_M;

        // Sᵀ and dPᵀ (16 keys x 64 queries each). Sᵀ becomes Pᵀ in place, masked entries
        // exp2(-inf) = 0; dPᵀ becomes scale·dSᵀ = scale·Pᵀ ∘ (dPᵀ − delta) in place: both dK and
        // dQ carry the factor scale, so it is applied once here.
        float p[8][4], ds[8][4];
        two_rows_times_rows_t(p, kOffK, kOffQ, ds, kOffV, kOffDo, rows_lane, cols_lane);
        if (query_tile == key_tile || seg_first_k != seg_q_tile[BLOCK_M - 1]) {
#pragma unroll
            for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = nt * 8 + 2 * (lane % 4) + e;
                    const int query = m0 + col;
#pragma unroll
                    for (int r = 0; r < 2; ++r) {
                        const bool visible = (k0 + key_in_tile + 8 * r <= query) & (seg_q_tile[col] == seg_k[r]);
                        p[nt][2 * r + e] = visible ? p[nt][2 * r + e] : neg_inf();
                    }
                }
            }
        }
#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float lse_log2 = lse_tile[nt * 8 + 2 * (lane % 4) + e] * kLog2e;
#pragma unroll
                for (int r = 0; r < 2; ++r)
                    p[nt][2 * r + e] = fast_exp2(fmaf(p[nt][2 * r + e], scale_log2, -lse_log2));
            }
        }

#pragma unroll
        for (int j = 0; j < 4; ++j) {
            unsigned pf[4];
            c_to_a_frag(pf, p, j);
            frag_times_rows(dv_acc, pf, k_major_lane, kOffDo, j * 16);
        }

#pragma unroll
        for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float scaled_delta = delta_tile[nt * 8 + 2 * (lane % 4) + e] * scale;
#pragma unroll
                for (int r = 0; r < 2; ++r)
                    ds[nt][2 * r + e] = p[nt][2 * r + e] * fmaf(ds[nt][2 * r + e], scale, -scaled_delta);
            }
        }

        unsigned char* ds_tile = smem + kOffDs;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            unsigned dsf[4];
            c_to_a_frag(dsf, ds, j);
            // The fragment's registers are the C-layout pairs of rows key_in_tile(+8), columns
            // 16j + 2*(lane%4) (+8): store them as dSᵀ rows for phase 2.
#pragma unroll
            for (int half = 0; half < 2; ++half) {
#pragma unroll
                for (int r = 0; r < 2; ++r) {
                    const int row = key_in_tile + 8 * r;
                    *reinterpret_cast<unsigned*>(ds_tile + swizzle(row, 2 * j + half, kDsChunks) + (lane % 4) * 4) =
                        dsf[2 * half + r];
                }
            }
            frag_times_rows(dk_acc, dsf, k_major_lane, kOffQ, j * 16);
        }
        __syncthreads();

        // Phase 1 is done with Q, dO, lse, delta and the query segment ids: fetch the next tile.
        const int done_head = head, done_m0 = m0;
        ++query_tile;
        if (query_tile == skip_begin) query_tile = skip_end;
        if (query_tile == num_tiles) {
            ++head;
            query_tile = key_tile;
        }
        const bool has_next = head < head_end;
        if (has_next) {
            load_query_tile(head, query_tile);
            cp_async_commit();
        }

        // dQ rows warp*16..+15 of the finished tile += (scale·dS) · K, with dS read back
        // transposed from the dSᵀ tile. All HEAD_DIM columns at once: more independent mma
        // chains, and p/ds are dead here, so the registers are free.
        float dq[HEAD_DIM / 8][4];
#pragma unroll
        for (int dt = 0; dt < HEAD_DIM / 8; ++dt)
            dq[dt][0] = dq[dt][1] = dq[dt][2] = dq[dt][3] = 0.f;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            unsigned dsf[4];
            ldsm_x4_trans(dsf, ds_t_addr + j * 16 * kDsChunks * 16);
            frag_times_rows(dq, dsf, k_major_lane, kOffK, j * 16);
        }
        float* dq_rows = dq_accum + ((long long)(b * heads + done_head) * len + done_m0 + warp * 16) * HEAD_DIM;
#pragma unroll
        for (int dt = 0; dt < HEAD_DIM / 8; ++dt) {
#pragma unroll
            for (int r = 0; r < 2; ++r)
                red_add_f32x2(dq_rows + (lane / 4 + 8 * r) * HEAD_DIM + dt * 8 + 2 * (lane % 4), dq[dt][2 * r],
                              dq[dt][2 * r + 1]);
        }
        if (!has_next) break;
    }

    // Every warp has finished reading K (phase 2) before its rows are reused for staging.
    __syncthreads();
    const float unscaled[2] = {1.f, 1.f};
    store_warp_rows(dk_acc, unscaled, smem + kOffK, dk + k_offset, HEAD_DIM);
    store_warp_rows(dv_acc, unscaled, smem + kOffV, dv + v_offset, kv_heads * HEAD_DIM);
}

// ---------------------------------------------------------------------------------------------
// dq = bf16(dq_accum); 8 elements per thread.

extern "C" __global__ void __launch_bounds__(NUM_THREADS)
flash_bwd_dq(const float* __restrict__ dq_accum, unsigned short* __restrict__ dq, const Count count) {
    const int n = count.n;
    const long long i = ((long long)blockIdx.x * NUM_THREADS + threadIdx.x) * DQ_ELEMS_PER_THREAD;
    if (i + DQ_ELEMS_PER_THREAD <= n) {
        const F32x4 a = *reinterpret_cast<const F32x4*>(dq_accum + i);
        const F32x4 c = *reinterpret_cast<const F32x4*>(dq_accum + i + 4);
        U32x4 packed;
        packed.x = pack_bf16x2(a.x, a.y);
        packed.y = pack_bf16x2(a.z, a.w);
        packed.z = pack_bf16x2(c.x, c.y);
        packed.w = pack_bf16x2(c.z, c.w);
        *reinterpret_cast<U32x4*>(dq + i) = packed;
    } else {
        for (long long j = i; j < n; ++j)
            dq[j] = to_bf16(dq_accum[j]);
    }
}
