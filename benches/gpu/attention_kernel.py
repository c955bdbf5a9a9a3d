"""Checks and times the attention kernels of crates/cuda/src/flash_attention.cu outside
the Rust build: compiles the file with NVRTC and launches it through the CUDA driver API, both
through ctypes, exactly as the Rust side does, on PyTorch tensors.

    python3 benches/gpu/attention_kernel.py [--check] [--bench]     (both when neither is given)
    python3 benches/gpu/attention_kernel.py --compile-only [--ptx-dir DIR]

--check compares out, lse, dq, dk and dv with a float32 PyTorch reference (explicit masked
softmax, autograd) on random bf16 inputs, with and without packed segments, and exits non-zero
on any failure. --bench times forward and forward+backward against PyTorch's
scaled_dot_product_attention (causal, bf16). --compile-only needs neither a GPU nor PyTorch.

Needs: an NVIDIA GPU of compute capability 9.0, libcuda, libnvrtc (system or the nvidia-* pip
packages), PyTorch with CUDA.
"""

import argparse
import ctypes
import glob
import math
import os
import site
import struct
import sys
import warnings

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # --compile-only runs without PyTorch
    torch = None

KERNEL_SOURCE = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "crates", "cuda", "src", "flash_attention.cu"
)
ARCH = "sm_90"

# Mirrors the launch table at the top of the .cu file.
BLOCK_M = 64
BLOCK_N = 64
NUM_THREADS = 128
DELTA_ROWS_PER_BLOCK = 16
DQ_ELEMS_PER_BLOCK = 1024


def fwd_smem_bytes(head_dim):
    return 4 * BLOCK_N * head_dim * 2 + 2 * BLOCK_N * 4


def bwd_smem_bytes(head_dim):
    return (2 * BLOCK_N + 2 * BLOCK_M) * head_dim * 2 + BLOCK_M * BLOCK_N * 2 + 3 * BLOCK_M * 4


# ----------------------------------------------------------------------------------------------
# NVRTC


def load_nvrtc():
    for name in ("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            pass
    roots = list(site.getsitepackages()) + [site.getusersitepackages()] + [p for p in sys.path if p]
    candidates = []
    for root in roots:
        candidates += glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so*"))
    # Newest first; the builtins library is loaded by libnvrtc itself.
    for path in sorted(set(candidates), reverse=True):
        if "builtins" in os.path.basename(path):
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            pass
    sys.exit("libnvrtc not found: install the CUDA toolkit or `pip install nvidia-cuda-nvrtc`")


class Nvrtc:
    def __init__(self):
        lib = load_nvrtc()
        self.lib = lib
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        lib.nvrtcCreateProgram.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.nvrtcCompileProgram.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        for name in ("nvrtcGetProgramLogSize", "nvrtcGetPTXSize", "nvrtcGetCUBINSize"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]
        for name in ("nvrtcGetProgramLog", "nvrtcGetPTX", "nvrtcGetCUBIN"):
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nvrtcDestroyProgram.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        major, minor = ctypes.c_int(), ctypes.c_int()
        lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        self.version = (major.value, minor.value)

    def _check(self, result, what):
        if result != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(result).decode()}")

    def _blob(self, prog, size_fn, get_fn):
        size = ctypes.c_size_t()
        self._check(size_fn(prog, ctypes.byref(size)), "size query")
        buf = ctypes.create_string_buffer(size.value)
        self._check(get_fn(prog, buf), "read")
        return buf.raw

    def compile(self, source, head_dim):
        """Returns (ptx, cubin, log); ptx and cubin end with a NUL byte, as the driver wants."""
        prog = ctypes.c_void_p()
        self._check(
            self.lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"flash_attention.cu", 0, None, None),
            "nvrtcCreateProgram",
        )
        try:
            options = [f"--gpu-architecture={ARCH}".encode(), f"-DHEAD_DIM={head_dim}".encode(), b"--std=c++17"]
            result = self.lib.nvrtcCompileProgram(prog, len(options), (ctypes.c_char_p * len(options))(*options))
            log = self._blob(prog, self.lib.nvrtcGetProgramLogSize, self.lib.nvrtcGetProgramLog)
            log = log.rstrip(b"\0").decode(errors="replace").strip()
            if result != 0:
                raise RuntimeError(f"NVRTC failed for HEAD_DIM={head_dim}:\n{log}")
            ptx = self._blob(prog, self.lib.nvrtcGetPTXSize, self.lib.nvrtcGetPTX)
            cubin = self._blob(prog, self.lib.nvrtcGetCUBINSize, self.lib.nvrtcGetCUBIN)
            return ptx, cubin, log
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


# ----------------------------------------------------------------------------------------------
# CUDA driver API

CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
CUDA_ERROR_UNSUPPORTED_PTX_VERSION = 222


class Driver:
    def __init__(self):
        lib = ctypes.CDLL("libcuda.so.1")
        self.lib = lib
        lib.cuGetErrorString.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]
        lib.cuModuleLoadData.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p]
        lib.cuModuleGetFunction.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_char_p]
        lib.cuFuncSetAttribute.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.cuLaunchKernel.argtypes = [
            ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p,
        ]
        self.check(lib.cuInit(0), "cuInit")
        # PyTorch's runtime makes the device's primary context current on this thread.
        torch.zeros(1, device="cuda")
        ctx = ctypes.c_void_p()
        self.check(lib.cuCtxGetCurrent(ctypes.byref(ctx)), "cuCtxGetCurrent")
        if not ctx.value:
            raise RuntimeError("no current CUDA context after PyTorch initialisation")

    def check(self, result, what):
        if result != 0:
            msg = ctypes.c_char_p()
            self.lib.cuGetErrorString(result, ctypes.byref(msg))
            raise RuntimeError(f"{what} failed: {result} {msg.value.decode() if msg.value else ''}")

    def load_module(self, ptx, cubin):
        module = ctypes.c_void_p()
        result = self.lib.cuModuleLoadData(ctypes.byref(module), ptx)
        if result == CUDA_ERROR_UNSUPPORTED_PTX_VERSION:
            # NVRTC newer than the driver: its PTX can't be JIT-compiled, but its sm_90 code loads.
            print("note: the driver rejects this NVRTC's PTX version; loading its sm_90 cubin instead")
            result = self.lib.cuModuleLoadData(ctypes.byref(module), cubin)
        self.check(result, "cuModuleLoadData")
        return module

    def function(self, module, name, dynamic_smem):
        fn = ctypes.c_void_p()
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(fn), module, name.encode()), f"cuModuleGetFunction {name}")
        if dynamic_smem:
            self.check(
                self.lib.cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, dynamic_smem),
                f"cuFuncSetAttribute {name}",
            )
        return fn

    def launch(self, fn, grid, smem, args):
        """args: tensors (passed as device pointers), then ints (int32) and floats (f32), which
        travel together as the kernel's one struct argument."""
        values = [ctypes.c_void_p(a.data_ptr()) for a in args if isinstance(a, torch.Tensor)]
        scalars = [a for a in args if not isinstance(a, torch.Tensor)]
        packed = b"".join(struct.pack("<f" if isinstance(a, float) else "<i", a) for a in scalars)
        values.append(ctypes.create_string_buffer(packed, len(packed)))
        params = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.byref(x), ctypes.c_void_p) for x in values])
        stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        gx, gy = grid
        self.check(
            self.lib.cuLaunchKernel(fn, gx, gy, 1, NUM_THREADS, 1, 1, smem, stream, params, None), "cuLaunchKernel"
        )


class FlashAttention:
    """The four kernels for one head dimension, with the launch arithmetic of the table."""

    def __init__(self, driver, nvrtc, source, head_dim):
        self.driver = driver
        self.head_dim = head_dim
        ptx, cubin, log = nvrtc.compile(source, head_dim)
        if log:
            print(f"NVRTC log (HEAD_DIM={head_dim}):\n{log}")
        module = driver.load_module(ptx, cubin)
        self.fwd_smem = fwd_smem_bytes(head_dim)
        self.bwd_smem = bwd_smem_bytes(head_dim)
        self.fwd = driver.function(module, "flash_fwd", self.fwd_smem)
        self.delta = driver.function(module, "flash_bwd_delta", 0)
        self.bwd = driver.function(module, "flash_bwd", self.bwd_smem)
        self.dq = driver.function(module, "flash_bwd_dq", 0)

    def forward(self, q, k, v, seg):
        batch, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        out = torch.empty_like(q)
        lse = torch.empty(batch, heads, length, device=q.device, dtype=torch.float32)
        self.driver.launch(
            self.fwd, (length // BLOCK_M, batch * heads), self.fwd_smem,
            [q, k, v, seg, out, lse, batch, heads, kv_heads, length, 1.0 / math.sqrt(dim)],
        )
        return out, lse

    def backward(self, q, k, v, seg, out, dout, lse):
        batch, heads, length, dim = q.shape
        kv_heads = k.shape[1]
        rows = batch * heads * length
        delta = torch.empty(batch, heads, length, device=q.device, dtype=torch.float32)
        dq_accum = torch.empty(q.shape, device=q.device, dtype=torch.float32)
        self.driver.launch(self.delta, (-(-rows // DELTA_ROWS_PER_BLOCK), 1), 0, [out, dout, delta, dq_accum, rows])
        dk = torch.empty_like(k)
        dv = torch.empty_like(v)
        self.driver.launch(
            self.bwd, (length // BLOCK_N, batch * kv_heads), self.bwd_smem,
            [q, k, v, seg, dout, lse, delta, dq_accum, dk, dv, batch, heads, kv_heads, length, 1.0 / math.sqrt(dim)],
        )
        dq = torch.empty_like(q)
        n = dq.numel()
        self.driver.launch(self.dq, (-(-n // DQ_ELEMS_PER_BLOCK), 1), 0, [dq_accum, dq, n])
        return dq, dk, dv


# ----------------------------------------------------------------------------------------------
# Correctness


def packed_segments(batch, length, min_len, max_len, pad_max, gen):
    """Rows of consecutive segment ids 0, 1, 2, ... of random lengths; odd rows end with 1 to
    pad_max tokens of -1 padding (none when pad_max is 0)."""
    seg = torch.full((batch, length), -1, dtype=torch.int32)
    for b in range(batch):
        pad = int(torch.randint(1, pad_max + 1, (1,), generator=gen)) if pad_max and b % 2 else 0
        pos, sid = 0, 0
        while pos < length - pad:
            n = int(torch.randint(min_len, max_len + 1, (1,), generator=gen))
            n = min(n, length - pad - pos)
            seg[b, pos:pos + n] = sid
            pos += n
            sid += 1
    return seg.cuda()


def reference(q, k, v, seg, dout):
    """float32 attention with an explicit visibility mask; returns out, lse, dq, dk, dv."""
    heads, kv_heads, length = q.shape[1], k.shape[1], q.shape[2]
    qf, kf, vf = (t.float().requires_grad_() for t in (q, k, v))
    group = heads // kv_heads
    ke = kf.repeat_interleave(group, dim=1)
    ve = vf.repeat_interleave(group, dim=1)
    scores = (qf @ ke.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    pos = torch.arange(length, device=q.device)
    causal = pos[None, :] <= pos[:, None]
    visible = causal[None] & (seg[:, :, None] == seg[:, None, :])
    scores = scores.masked_fill(~visible[:, None], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.softmax(scores, dim=-1) @ ve
    out.backward(dout.float())
    return out.detach(), lse.detach(), qf.grad, kf.grad, vf.grad


def check(kernels_by_dim):
    rel_tol, lse_tol = 2e-2, 1e-3
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    failures = 0
    batch = 2
    for dim in (64, 128):
        fa = kernels_by_dim[dim]
        for heads, kv_heads in ((9, 3), (32, 32), (8, 2)):
            for length in (128, 512, 1024):
                for packed in (False, True):
                    q = torch.randn(batch, heads, length, dim, device="cuda").bfloat16()
                    k = torch.randn(batch, kv_heads, length, dim, device="cuda").bfloat16()
                    v = torch.randn(batch, kv_heads, length, dim, device="cuda").bfloat16()
                    dout = torch.randn(batch, heads, length, dim, device="cuda").bfloat16()
                    if packed:
                        seg = packed_segments(batch, length, 1, length // 3, length // 4, gen)
                    else:
                        seg = torch.zeros(batch, length, dtype=torch.int32, device="cuda")
                    out, lse = fa.forward(q, k, v, seg)
                    dq, dk, dv = fa.backward(q, k, v, seg, out, dout, lse)
                    torch.cuda.synchronize()
                    ref = reference(q, k, v, seg, dout)
                    ok = True
                    parts = []
                    for name, ours, theirs in zip(("out", "lse", "dq", "dk", "dv"), (out, lse, dq, dk, dv), ref):
                        err = (ours.float() - theirs).abs().max().item()
                        rel = err / max(theirs.abs().max().item(), 1e-30)
                        good = err <= lse_tol if name == "lse" else rel <= rel_tol
                        ok &= good and math.isfinite(err)
                        parts.append(f"{name} {err:.1e}/{rel:.1e}" + ("" if good else "!"))
                    failures += not ok
                    label = f"D={dim:3d} H={heads:2d} KV={kv_heads:2d} L={length:4d} {'packed' if packed else 'causal'}"
                    print(f"{label}  {'  '.join(parts)}  {'PASS' if ok else 'FAIL'}", flush=True)
    print("(each tensor: max abs error / max abs error over max |reference|; "
          f"limits: lse abs {lse_tol}, others rel {rel_tol})")
    return failures


# ----------------------------------------------------------------------------------------------
# Benchmark


def time_ms(fn, warmup=3, iters=20):
    for _ in range(warmup):
        fn()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters


def bench(kernels_by_dim):
    shapes = (("llama2-7b", 2, 32, 32, 4096, 128), ("smollm2-135m", 2, 9, 3, 4096, 64))
    gen = torch.Generator().manual_seed(1)
    print(f"{'shape':14s} {'impl':22s} {'fwd ms':>8s} {'TFLOP/s':>8s} {'fwd+bwd ms':>11s} {'TFLOP/s':>8s}")
    for name, batch, heads, kv_heads, length, dim in shapes:
        fa = kernels_by_dim[dim]
        q = torch.randn(batch, heads, length, dim, device="cuda").bfloat16()
        k = torch.randn(batch, kv_heads, length, dim, device="cuda").bfloat16()
        v = torch.randn(batch, kv_heads, length, dim, device="cuda").bfloat16()
        dout = torch.randn(batch, heads, length, dim, device="cuda").bfloat16()

        def row(impl, fwd, fwd_bwd, visible_pairs):
            # Causal attention FLOPs: 2 products of 2·D FLOPs per visible pair forward, 2.5x that backward.
            fwd_flops = 4 * heads * dim * visible_pairs
            f_ms, fb_ms = time_ms(fwd), time_ms(fwd_bwd)
            print(f"{name:14s} {impl:22s} {f_ms:8.3f} {fwd_flops / f_ms / 1e9:8.1f} "
                  f"{fb_ms:11.3f} {3.5 * fwd_flops / fb_ms / 1e9:8.1f}", flush=True)

        causal_pairs = batch * length * length / 2
        qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))

        def sdpa_fwd():
            with torch.no_grad():
                F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

        def sdpa_fwd_bwd():
            o = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, enable_gqa=True)
            torch.autograd.grad(o, (qg, kg, vg), dout)

        row("torch sdpa (causal)", sdpa_fwd, sdpa_fwd_bwd, causal_pairs)

        for impl, seg in (
            ("ours (causal)", torch.zeros(batch, length, dtype=torch.int32, device="cuda")),
            ("ours (packed 256-2048)", packed_segments(batch, length, 256, 2048, 0, gen)),
        ):
            counts = [torch.unique_consecutive(r, return_counts=True)[1].double() for r in seg.cpu()]
            pairs = sum(float((c * (c + 1) / 2).sum()) for c in counts)

            def ours_fwd(seg=seg):
                fa.forward(q, k, v, seg)

            def ours_fwd_bwd(seg=seg):
                out, lse = fa.forward(q, k, v, seg)
                fa.backward(q, k, v, seg, out, dout, lse)

            row(impl, ours_fwd, ours_fwd_bwd, pairs)
    print("(TFLOP/s count visible query-key pairs only: L²/2 per causal row, the sum of n(n+1)/2 over "
          "segments for packed rows)")


# ----------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with a float32 PyTorch reference")
    parser.add_argument("--bench", action="store_true", help="time against torch SDPA")
    parser.add_argument("--compile-only", action="store_true", help="only compile with NVRTC and print the logs")
    parser.add_argument("--ptx-dir", help="with --compile-only: write flash_attention_d<D>.ptx here")
    args = parser.parse_args()

    with open(KERNEL_SOURCE) as f:
        source = f.read()
    nvrtc = Nvrtc()
    print(f"NVRTC {nvrtc.version[0]}.{nvrtc.version[1]}, {os.path.normpath(KERNEL_SOURCE)}")

    if args.compile_only:
        for dim in (64, 128):
            ptx, _, log = nvrtc.compile(source, dim)
            print(f"HEAD_DIM={dim}: {len(ptx)} bytes of PTX; log: {log or '(empty)'}")
            if args.ptx_dir:
                os.makedirs(args.ptx_dir, exist_ok=True)
                with open(os.path.join(args.ptx_dir, f"flash_attention_d{dim}.ptx"), "wb") as f:
                    f.write(ptx.rstrip(b"\0"))
        return 0

    if torch is None or not torch.cuda.is_available():
        sys.exit("PyTorch with a CUDA device is required (or use --compile-only)")
    run_check = args.check or not args.bench
    run_bench = args.bench or not args.check
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    # Autograd's device thread creates its cuBLAS handle before making the primary context
    # current there and says so; the reference's results are unaffected.
    warnings.filterwarnings("ignore", message="Attempting to run cuBLAS, but there was no current CUDA context")
    driver = Driver()
    kernels_by_dim = {dim: FlashAttention(driver, nvrtc, source, dim) for dim in (64, 128)}

    failures = 0
    if run_check:
        failures = check(kernels_by_dim)
        print(f"check: {'all passed' if failures == 0 else f'{failures} case(s) FAILED'}")
    if run_bench:
        bench(kernels_by_dim)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
