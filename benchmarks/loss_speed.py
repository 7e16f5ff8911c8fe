"""IHL head + loss, forward and backward: time per step and peak memory of this project
against the reference's computation pattern.

The reference computes DSDT with coordinate grids repeated to full map size
(B x K x H x W) and the Wasserstein term as a geomloss Sinkhorn between the
joints' concatenated marginal vectors. Ours reads everything off the 1-D
marginals (the normalised map is never materialised) and uses the closed-form
W1, or the reference's Sinkhorn term on those marginals (the paper presets' form). All
share the same RealNVP likelihood. Each variant runs in its own process (peak memory is
that process's high-water resident set above its baseline), rounds alternate between
variants, and the ratios are taken round by round, between neighbouring processes.

    uv run python benchmarks/loss_speed.py [--batch 64] [--iters 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from geomloss import SamplesLoss

from ihl import ops
from ihl.config import LossConfig
from ihl.losses import IHLLoss

K, H, W = 17, 64, 48


def reference_pattern(z, target, loss: IHLLoss, sinkhorn: SamplesLoss):
    """A re-creation of the reference computation: full-size grids, Sinkhorn on marginals."""
    b = z.shape[0]
    shifted = z - z.flatten(2).min(-1).values[..., None, None]
    h = shifted / shifted.sum((2, 3), keepdim=True)
    xs = (torch.arange(W, dtype=z.dtype) / W).repeat(b, K, H, 1)
    ys = (torch.arange(H, dtype=z.dtype) / H).view(H, 1).repeat(b, K, 1, W)
    mu_x, mu_y = (h * xs).sum((2, 3)), (h * ys).sum((2, 3))
    var_x = (h * (xs - mu_x[..., None, None]) ** 2).sum((2, 3))
    var_y = (h * (ys - mu_y[..., None, None]) ** 2).sum((2, 3))
    mu = torch.stack((mu_x, mu_y), -1)
    sigma = torch.stack((var_x, var_y), -1).abs().sqrt()
    likelihood = loss.likelihood(mu, sigma, target["coords"], target["weights"])
    hm = target["heatmaps"] / target["heatmaps"].sum((2, 3), keepdim=True)
    pred = torch.cat((h.sum(2), h.sum(3)), -1)
    ref = torch.cat((hm.sum(2), hm.sum(3)), -1)
    return likelihood + sinkhorn(pred, ref).mean()


def ours(z, target, loss: IHLLoss):
    px, py = ops.sihn_marginals(z)
    mu, var = ops.marginal_moments(px, py)
    out = {"coords": mu, "sigma": var.abs().sqrt(), "marginals_x": px, "marginals_y": py}
    return loss(out, target)["loss"]


VARIANTS = {
    "reference": "reference pattern",
    "exact": "ours, exact W1",
    "sinkhorn": "ours, Sinkhorn",
}
"""Each variant and its row label: ours with either Wasserstein form (the ``sample``
preset's exact W1, the paper presets' Sinkhorn term)."""


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_variant(variant: str, batch: int, iters: int) -> dict:
    torch.manual_seed(0)
    z = torch.randn(batch, K, H, W, requires_grad=True)
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    centres = torch.rand(batch, K, 2)
    cx, cy = centres[..., 0, None, None] * W, centres[..., 1, None, None] * H
    target = {
        "coords": centres,
        "weights": torch.ones(batch, K),
        "heatmaps": torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 8),
    }
    loss = IHLLoss(LossConfig(wasserstein="exact" if variant == "exact" else "sinkhorn"))
    sinkhorn = SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.5)

    def step():
        z.grad = None
        value = (
            reference_pattern(z, target, loss, sinkhorn)
            if variant == "reference"
            else ours(z, target, loss)
        )
        value.backward()

    baseline = _rss_bytes()
    step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"ms": 1000 * statistics.median(times), "peak_mb": peak / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.batch, args.iters)))
        return

    # A fixed mmap threshold makes freed tensors leave the resident set, so the
    # high-water mark measures live memory rather than allocator caching.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    results: dict[str, list[dict]] = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in results:
            cmd = [sys.executable, __file__, "--variant", variant]
            cmd += ["--batch", str(args.batch), "--iters", str(args.iters)]
            out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            results[variant].append(json.loads(out.stdout))
    print(
        f"IHL head + loss, forward+backward, B={args.batch} K={K} {H}x{W} maps, CPU, "
        f"{torch.get_num_threads()} threads; {args.rounds} rounds x {args.iters} iters "
        f"(each round's median step), load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'variant':<20}{'min ms':>9}{'median ms':>11}{'max ms':>9}{'peak MiB':>10}")
    for variant, label in VARIANTS.items():
        ms = [r["ms"] for r in results[variant]]
        peak = min(r["peak_mb"] for r in results[variant])
        print(
            f"{label:<20}{min(ms):>9.1f}{statistics.median(ms):>11.1f}{max(ms):>9.1f}{peak:>10.1f}"
        )
    print("reference / ours, per round (min, median, max) and peak memory:")
    ref = results["reference"]
    for variant in ("exact", "sinkhorn"):
        ratios = [r["ms"] / o["ms"] for r, o in zip(ref, results[variant], strict=True)]
        memory = min(r["peak_mb"] for r in ref) / min(o["peak_mb"] for o in results[variant])
        print(
            f"  {VARIANTS[variant]:<18}{min(ratios):>6.2f}x{statistics.median(ratios):>7.2f}x"
            f"{max(ratios):>7.2f}x   memory {memory:.2f}x less"
        )


if __name__ == "__main__":
    main()
