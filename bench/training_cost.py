"""Cost of one adversarial training step per norm, relative to a clean step.

Prints ratios measured in one run (the machine is shared and noisy; absolute
seconds mean little, ratios within a run mean more):

    .venv/bin/python bench/training_cost.py [--width 16] [--batch 128] [--steps 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

from robustsoup.models import build_model
from robustsoup.train import make_input_policy

EPS = {"Linf": 0.1, "L2": 3.0, "L1": 24.0}


def _step_seconds(model, policy, x, y, repeats: int) -> float:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model.eval()
        x_train = policy(model, x, y)
        model.train()
        loss = F.cross_entropy(model(x_train), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model("preact_resnet_small", 10, (0.3,) * 3, (0.3,) * 3, width=args.width)
    x = torch.rand(args.batch, 3, 32, 32)
    y = torch.randint(0, 10, (args.batch,))
    clean = _step_seconds(model, make_input_policy("none", None, 0, 0), x, y, args.repeats)
    print(f"threads={torch.get_num_threads()} width={args.width} batch={args.batch} attack steps={args.steps}")
    print(f"{'policy':<8}{'s/step':>10}{'× clean':>10}{'× (steps+1)':>13}")
    print(f"{'clean':<8}{clean:>10.3f}{1.0:>10.2f}{'':>13}")
    for norm, eps in EPS.items():
        seconds = _step_seconds(model, make_input_policy(norm, eps, args.steps, 0), x, y, args.repeats)
        ratio = seconds / clean
        print(f"{norm:<8}{seconds:>10.3f}{ratio:>10.2f}{ratio / (args.steps + 1):>13.2f}")


if __name__ == "__main__":
    main()
