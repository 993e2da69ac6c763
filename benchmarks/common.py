"""What every benchmark shares: its command line, the device, and the WRN-16-2 -> WRN-16-1 AT setup."""

from __future__ import annotations

import argparse
import platform
from contextlib import nullcontext
from typing import Any

import torch

from atlib.engine import resolve_device, set_fp32_math
from atlib.losses import Objective
from atlib.method import Method
from atlib.models import build_model

PRECISIONS = ("fp32", "bf16")


def parser(doc: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    return ap


def device_of(args: argparse.Namespace) -> torch.device:
    if args.threads:
        torch.set_num_threads(args.threads)
    return resolve_device(args.device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"


def on_device(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` on ``device`` in the engine's layout there: channels_last on CUDA, as atlib.engine.train."""
    module = module.to(device)
    return module.to(memory_format=torch.channels_last) if device.type == "cuda" else module


def autocast(device: torch.device, precision: str) -> Any:
    """A context factory like the engine's ``amp``: bf16 autocast, or fp32 (nothing), with the engine's fp32 math
    (IEEE on CUDA: TF32 off), as a recipe's ``precision`` sets it."""
    set_fp32_math(device, precision)
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext


def teacher_model(device: torch.device, name: str = "wrn-16-2", channels: int = 3) -> torch.nn.Module:
    return on_device(build_model(name, channels, 10), device).eval().requires_grad_(False)


def sgd(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def at_objective(device: torch.device, method: str = "at", teacher: torch.nn.Module | None = None,
                 student: str = "wrn-16-1", shape: tuple[int, int, int] = (3, 32, 32)
                 ) -> tuple[Objective, torch.optim.Optimizer]:
    """A fresh ``student`` (default WRN-16-1) under ``method`` from ``teacher`` (default a WRN-16-2) on inputs of
    ``shape`` (default CIFAR's), and its SGD."""
    model = on_device(build_model(student, shape[0], 10), device)
    objective = Objective(Method.from_config(method), model, teacher or teacher_model(device, channels=shape[0]),
                          shape, device)
    return objective, sgd([p for p in objective.parameters() if p.requires_grad])
