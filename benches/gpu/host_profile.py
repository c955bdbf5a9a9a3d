r"""Where a tigerflow process spends its host time, thread by thread, on machines without perf.

    python3 benches/gpu/host_profile.py record --delay 15 --seconds 10 --out prof.jsonl -- \
        tigerflow bench train --shape smollm2-135m --device cuda --warmup-steps 2 --steps 60
    python3 benches/gpu/host_profile.py report prof.jsonl --binary target/release/tigerflow

`record` (Python's standard library only, for the GPU machine) starts the command, waits
`--delay` seconds, then about every 1/`--hz` seconds stops each thread that is running (state R)
with ptrace, keeps its registers and the code and stack addresses on the top 64 KiB of its stack,
and lets it go. A thread that sleeps is counted, not sampled: the report says how often each
thread ran. `report` (needs binutils' `readelf` and `nm`, and the same binary with its symbols,
i.e. not stripped) unwinds each sample with the binary's unwind tables (`.eh_frame`), as a
debugger would, and prints per thread the functions the samples were in (flat) and on whose
stacks (inclusive). Frames inside shared libraries are skipped to the first return address into
the binary. perf (`perf record --call-graph dwarf`) gives the same where it is installed.
"""

import argparse
import bisect
import collections
import ctypes
import ctypes.util
import json
import os
import re
import struct
import subprocess
import sys
import time

STACK_BYTES = 65536
# ptrace requests and waitpid's flag for threads (linux/ptrace.h, linux/wait.h).
PTRACE_GETREGS, PTRACE_CONT, PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 12, 7, 17, 0x4206, 0x4207
WALL = 0x40000000
# Indices of rip, rsp and rbp in x86-64's user_regs_struct.
RIP, RSP, RBP = 16, 19, 4


def stat_fields(pid, tid):
    """The fields of a thread's /proc stat line after its name: state first."""
    return open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()


def thread_stat(pid, tid):
    """(name, state, user ticks, system ticks) of one thread."""
    fields = stat_fields(pid, tid)
    name = open(f"/proc/{pid}/task/{tid}/comm").read().strip()
    return name, fields[0], int(fields[11]), int(fields[12])


def record(args):
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.ptrace.restype = ctypes.c_long
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    child = subprocess.Popen(args.command, stdout=open(args.out + ".stdout", "w"), stderr=subprocess.STDOUT)
    pid = child.pid
    time.sleep(args.delay)
    maps = []
    for line in open(f"/proc/{pid}/maps"):
        parts = line.split()
        low, high = (int(x, 16) for x in parts[0].split("-"))
        maps.append((low, high, parts[1], int(parts[2], 16), parts[5] if len(parts) > 5 else ""))
    code = [(low, high) for low, high, perms, _, _ in maps if "x" in perms]
    tasks = lambda: os.listdir(f"/proc/{pid}/task")
    out = open(args.out, "w")
    out.write(json.dumps({"maps": maps}) + "\n")
    out.write(json.dumps({"threads_at_start": {t: thread_stat(pid, t) for t in tasks()}}) + "\n")
    mem = open(f"/proc/{pid}/mem", "rb", buffering=0)
    regs = (ctypes.c_ulong * 27)()
    status = ctypes.c_int()
    seized, asleep, rounds = set(), collections.Counter(), 0
    end = time.time() + args.seconds
    while time.time() < end and child.poll() is None:
        start = time.time()
        for name in tasks():
            tid = int(name)
            try:
                state = stat_fields(pid, tid)[0]
            except OSError:
                continue
            if state != "R":
                asleep[tid] += 1
                continue
            if tid not in seized:
                if libc.ptrace(PTRACE_SEIZE, tid, None, None) != 0:
                    continue
                seized.add(tid)
            if libc.ptrace(PTRACE_INTERRUPT, tid, None, None) != 0:
                continue
            libc.waitpid(tid, ctypes.byref(status), WALL)
            if libc.ptrace(PTRACE_GETREGS, tid, None, ctypes.byref(regs)) == 0:
                rsp = regs[RSP]
                try:
                    mem.seek(rsp)
                    raw = mem.read(STACK_BYTES)
                except OSError:
                    raw = b""
                words = struct.unpack(f"<{len(raw) // 8}Q", raw[: len(raw) // 8 * 8])
                kept = {
                    i: w
                    for i, w in enumerate(words)
                    if rsp <= w < rsp + STACK_BYTES or any(low <= w < high for low, high in code)
                }
                out.write(json.dumps([tid, regs[RIP], rsp, regs[RBP], kept]) + "\n")
            libc.ptrace(PTRACE_CONT, tid, None, None)
        rounds += 1
        time.sleep(max(0.0, 1.0 / args.hz - (time.time() - start)))
    for tid in seized:
        libc.ptrace(PTRACE_INTERRUPT, tid, None, None)
        libc.waitpid(tid, ctypes.byref(status), WALL)
        libc.ptrace(PTRACE_DETACH, tid, None, None)
    out.write(json.dumps({"rounds": rounds, "asleep": asleep}) + "\n")
    out.close()
    child.wait()
    print(f"{rounds} rounds; the command exited with {child.returncode}")


class UnwindTable:
    """The binary's `.eh_frame` rows: for each code address, how to find the caller's frame."""

    def __init__(self, binary):
        rows = []
        columns, fde_end = None, None
        text = subprocess.run(["readelf", "-wF", binary], capture_output=True, text=True).stdout
        for line in text.splitlines():
            if " FDE " in line:
                fde_end = int(re.search(r"pc=[0-9a-f]+\.\.([0-9a-f]+)", line).group(1), 16)
                columns = None
            elif line.startswith("   LOC"):
                columns = line.split()
            elif columns and fde_end and re.match(r"^[0-9a-f]{16} ", line):
                parts = line.split()
                cfa = re.match(r"(rsp|rbp)\+(\d+)$", parts[1])
                rbp = None
                if "rbp" in columns[1:] and parts[columns.index("rbp")].startswith("c"):
                    rbp = int(parts[columns.index("rbp")][1:])
                rows.append((int(parts[0], 16), fde_end, cfa and cfa.group(1), cfa and int(cfa.group(2)), rbp))
        rows.sort()
        self.rows, self.starts = rows, [r[0] for r in rows]

    def row(self, address):
        i = bisect.bisect_right(self.starts, address) - 1
        return self.rows[i] if i >= 0 and address < self.rows[i][1] else None


class Symbols:
    def __init__(self, binary):
        listing = subprocess.run(["nm", "-n", "-C", "--defined-only", binary], capture_output=True, text=True).stdout
        self.entries = [
            (int(p[0], 16), p[2]) for p in (line.split(" ", 2) for line in listing.splitlines()) if len(p) == 3 and p[1] in "tTwW"
        ]
        self.starts = [a for a, _ in self.entries]

    def name(self, address):
        i = bisect.bisect_right(self.starts, address) - 1
        if i < 0:
            return "?"
        name = re.sub(r"::h[0-9a-f]{16}$", "", self.entries[i][1])
        for _ in range(2):
            name = re.sub(r"<[^<>]*>", "<>", name)
        return name[:160]


def report(args):
    lines = open(args.samples).read().splitlines()
    maps = json.loads(lines[0])["maps"]
    name = os.path.basename(args.binary)
    mine = [(low, high, offset) for low, high, _, offset, path in maps if os.path.basename(path) == name]
    if not mine:
        sys.exit(f"{args.samples}: no mapping of {name}; pass the binary that was profiled with --binary")
    base = min(low for low, _, offset in mine if offset == 0)
    text_low, text_high = min(m[0] for m in mine), max(m[1] for m in mine)
    table, symbols = UnwindTable(args.binary), Symbols(args.binary)

    def label(pc):
        if text_low <= pc < text_high:
            return symbols.name(pc - base)
        library = next((path for low, high, _, _, path in maps if low <= pc < high), "?")
        return f"[{os.path.basename(library)}]"

    def unwind(rip, rsp0, rbp, words):
        def read(address):
            if address is None or (address - rsp0) % 8:
                return None
            return words.get(str((address - rsp0) // 8))

        frames, pc, rsp, first = [], rip, rsp0, True
        for _ in range(256):
            frames.append(pc)
            if not text_low <= pc < text_high:
                # A library frame: resume at the first return address into the binary above it.
                above = sorted(int(k) for k in words if int(k) >= (rsp - rsp0) // 8)
                slot = next((k for k in above if text_low <= words[str(k)] < text_high), None)
                if slot is None:
                    break
                pc, rsp, first = words[str(slot)], rsp0 + 8 * (slot + 1), False
                continue
            row = table.row(pc - base if first else pc - base - 1)
            if row is None or row[2] is None or (row[2] == "rbp" and rbp is None):
                break
            cfa = (rsp if row[2] == "rsp" else rbp) + row[3]
            return_address = read(cfa - 8)
            if return_address is None:
                break
            if row[4] is not None:
                rbp = read(cfa - row[4])
            rsp, pc, first = cfa, return_address, False
        return [label(pc) for pc in frames]

    by_thread = collections.defaultdict(list)
    for line in lines[2:]:
        if not line.startswith("{"):
            tid, rip, rsp, rbp, words = json.loads(line)
            by_thread[tid].append((rip, rsp, rbp, words))
    started = json.loads(lines[1])["threads_at_start"]
    finished = json.loads(lines[-1])
    print(f"{finished['rounds']} rounds")
    for tid, samples in sorted(by_thread.items(), key=lambda kv: -len(kv[1])):
        if len(samples) < args.min_samples:
            continue
        thread = started.get(str(tid), ["?"])[0]
        asleep = finished["asleep"].get(str(tid), 0)
        print(f"\n=== thread {tid} ({thread}): running in {len(samples)} rounds, asleep in {asleep}")
        flat, inclusive = collections.Counter(), collections.Counter()
        for sample in samples:
            frames = unwind(*sample)
            flat[frames[0]] += 1
            inclusive.update(set(frames))
        for title, counts, top in (("flat", flat, args.top), ("inclusive", inclusive, 2 * args.top)):
            print(f"--- {title}")
            for function, n in counts.most_common(top):
                print(f"{100 * n / len(samples):5.1f}% {function}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="what", required=True)
    rec = commands.add_parser("record")
    rec.add_argument("--delay", type=float, default=15.0, help="seconds before sampling starts")
    rec.add_argument("--seconds", type=float, default=10.0)
    rec.add_argument("--hz", type=float, default=400.0, help="sampling rounds per second, at most")
    rec.add_argument("--out", required=True)
    rec.add_argument("command", nargs=argparse.REMAINDER)
    rep = commands.add_parser("report")
    rep.add_argument("samples")
    rep.add_argument("--binary", required=True)
    rep.add_argument("--top", type=int, default=30)
    rep.add_argument("--min-samples", type=int, default=20)
    args = parser.parse_args()
    if args.what == "record":
        if args.command[:1] == ["--"]:
            args.command = args.command[1:]
        if not args.command:
            parser.error("record needs a command after --")
        record(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
