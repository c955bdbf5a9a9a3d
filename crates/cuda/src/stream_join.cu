// Orders work on tigerflow's stream between two points of burn's stream without the host
// waiting (see `bridge::launch_ordered`). cubecl launches both kernels on burn's stream; the other
// stream meets them through a 32-bit flag in device memory, with CUDA's stream memory
// operations:
//
//   burn's stream:       ... join_signal(ready, n)  join_wait(done, n) ...
//   tigerflow's stream:        wait ready >= n, the operation's work, write done = n
//
// Sequence numbers grow by one per operation; comparisons are wrap-safe, as cuStreamWaitValue32's
// GEQ is. One thread per kernel.

struct Flag {
    unsigned long long address;
    unsigned value;
};

// Everything queued before on burn's stream has finished when this runs; the release store
// makes its writes visible before the flag.
extern "C" __global__ void __launch_bounds__(1) join_signal(const Flag flag) {
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(flag.address), "r"(flag.value) : "memory");
}

// Holds burn's stream until tigerflow's stream has written the flag (after its work).
extern "C" __global__ void __launch_bounds__(1) join_wait(const Flag flag) {
    for (;;) {
        unsigned seen;
        asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(seen) : "l"(flag.address) : "memory");
        if ((int)(seen - flag.value) >= 0) {
            return;
        }
        __nanosleep(256);
    }
}
