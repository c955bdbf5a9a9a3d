// What every kernel source launched through cubecl shares, put before it by
// `source_kernel::Program::new`. NVRTC compiles each source alone with nothing #included, so bf16
// values travel as their `unsigned short` bits and these helpers convert them.

// Sixteen bytes, the unit of vector loads and stores: eight bf16 values or four f32 values' bits.
struct alignas(16) U32x4 {
    unsigned x, y, z, w;
};

__device__ __forceinline__ float from_bf16(unsigned short bits) {
    return __uint_as_float(static_cast<unsigned>(bits) << 16);
}

// Rounds to nearest even, as PyTorch's conversion does.
__device__ __forceinline__ unsigned short to_bf16(float x) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(r) : "f"(x));
    return r;
}
