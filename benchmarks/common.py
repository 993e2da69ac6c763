"""What every benchmark shares: its command line, the device, and the WRN-16-2 -> WRN-16-1 AT setup."""

from __future__ import annotations

import argparse

import torch

from atlib.engine import resolve_device
from atlib.losses import Objective
from atlib.models import build_model
from atlib.spec import Method


def parser(doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return ap


def device_of(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def teacher_model(device: torch.device) -> torch.nn.Module:
    return build_model("wrn-16-2", 3, 10).to(device).eval().requires_grad_(False)


def sgd(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def at_objective(device: torch.device, method: str = "at",
                 teacher: torch.nn.Module | None = None) -> tuple[Objective, torch.optim.Optimizer]:
    """A fresh WRN-16-1 student under ``method`` from a WRN-16-2 teacher on CIFAR-sized inputs, and its SGD."""
    student = build_model("wrn-16-1", 3, 10).to(device)
    objective = Objective(Method.from_config(method), student, teacher or teacher_model(device), (3, 32, 32), device)
    return objective, sgd([p for p in objective.parameters() if p.requires_grad])
