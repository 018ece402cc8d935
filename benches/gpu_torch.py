"""torch's side of benches/gpu.sh: cuBLAS sgemm (torch.matmul on cuda, TF32 off, so
it is the same f32 arithmetic as kiln's kernel) and the elementwise chain
y = tanh(x*a + b)*c in eager torch, plus a device-to-device copy of the chain's
length, the card's practical memory bandwidth. Every time is the median of repeats
measured with CUDA events after warm-up runs.

Prints one line per measurement, as examples/gpu_bench.rs does:

    sgemm n=1024 median_ms=0.0712 min_ms=0.0701 runs=50 gflops=30162.3
    chain n=67108864 median_ms=1.2 min_ms=1.1 runs=50 gbps=... kernels=4
    copy n=67108864 median_ms=0.2 min_ms=0.2 runs=50 gbps=...

python benches/gpu_torch.py [--sgemm 1024,2048,4096,8192] [--chain 26] [--repeats 50]
"""

import argparse
import statistics
import sys

import torch


def time_cuda(fn, repeats):
    """Median and minimum of `repeats` timed calls of fn, in ms, after 3 warm-ups."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), min(times)


def line(kind, n, median, low, repeats, rate_name, rate, extra=""):
    return (f"{kind} n={n} median_ms={median:.4f} min_ms={low:.4f} runs={repeats} "
            f"{rate_name}={rate:.1f}{extra}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sgemm", default="1024,2048,4096,8192")
    parser.add_argument("--chain", type=int, default=26, help="log2 of the chain's length")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: torch sees no CUDA device (a CPU-only torch, or no GPU)")
    # The comparison is f32 against f32: TF32 tensor cores would round the inputs.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    generator = torch.Generator(device="cuda").manual_seed(0)
    for n in [int(n) for n in args.sgemm.split(",") if n]:
        a = torch.rand(n, n, device="cuda", generator=generator) * 2 - 1
        b = torch.rand(n, n, device="cuda", generator=generator) * 2 - 1
        c = torch.empty(n, n, device="cuda")
        median, low = time_cuda(lambda: torch.matmul(a, b, out=c), args.repeats)
        gflops = 2 * n**3 / (median * 1e-3) / 1e9
        print(line("sgemm", n, median, low, args.repeats, "gflops", gflops), flush=True)
        del a, b, c
    n = 1 << args.chain
    x = torch.rand(n, device="cuda", generator=generator) * 2 - 1
    y = torch.empty(n, device="cuda")
    bytes_moved = 2 * 4 * n
    # Eager torch runs the chain as four kernels, each reading and writing n floats;
    # the rate counts the 8 bytes per element a fused kernel moves, as kiln's does.
    median, low = time_cuda(lambda: torch.mul(torch.tanh(x * 0.75 + 0.25), 1.5, out=y),
                            args.repeats)
    print(line("chain", n, median, low, args.repeats, "gbps",
               bytes_moved / (median * 1e-3) / 1e9, " kernels=4"), flush=True)
    median, low = time_cuda(lambda: y.copy_(x), args.repeats)
    print(line("copy", n, median, low, args.repeats, "gbps",
               bytes_moved / (median * 1e-3) / 1e9), flush=True)


if __name__ == "__main__":
    main()
