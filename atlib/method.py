"""What a method is, below every module that names one: the base class, the registry, the parameters several methods
take, and what a loss returns and may use of the objective.

The spec validates a method through this module alone; the methods themselves (``atlib.methods``, one module each)
register here, and ``import atlib`` imports them all, so the registry is whole wherever a config is read. A user's
method comes by import path, ``package.module:Class`` (:func:`lookup`), and registers under that path. This module
imports no torch, and nothing of atlib but the error it raises and the import path's form.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol, TypeVar

from .errors import ConfigError
from .importpath import IMPORT_PATH

if TYPE_CHECKING:  # torch's types, for annotations only: the plan validates methods without torch
    from torch import Tensor, nn

Check = Callable[[Any], bool]
M = TypeVar("M", bound="type[Method]")

REGISTRY: dict[str, type[Method]] = {}


def register(cls: M) -> M:
    """Add a method class to the registry under its ``name``."""
    if cls.name in REGISTRY:
        raise ValueError(f"method {cls.name!r} is registered twice ({REGISTRY[cls.name].__module__}, {cls.__module__})")
    REGISTRY[cls.name] = cls
    return cls


def names() -> tuple[str, ...]:
    return tuple(sorted(REGISTRY))  # not the order the modules happened to be imported in


def lookup(name: Any, where: str = "method.name") -> type[Method]:
    """The class of a method name, or of a user's ``package.module:Class`` (imported and registered the first time);
    an unknown name or a path that does not lead to a method is a ConfigError naming the key ``where``."""
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None and isinstance(name, str) and IMPORT_PATH.fullmatch(name):
        cls = _load(name, where)
    if cls is None:
        raise ConfigError(f"{where}: unknown method {name!r}; expected one of {', '.join(names())}, or a method of "
                          "your own as package.module:Class")
    return cls


def _load(path: str, where: str) -> type[Method]:
    """A user's method class by import path, checked as a registered one is, then registered under the path."""
    module_name, _, attr = path.partition(":")
    expected = "expected package.module:Class, a frozen dataclass subclassing atlib.method.Method"
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{where}: cannot import {module_name!r} for method {path} ({e}); {expected}, importable "
                          "from the working folder, an installed package or PYTHONPATH") from None
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        what = "nothing" if cls is None else f"a {type(cls).__name__}"
        raise ConfigError(f"{where}: {path} is {what}; {expected}")
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise ConfigError(f"{where}: {path} is not a frozen dataclass; {expected} (@dataclass(frozen=True))")
    if cls.loss is Method.loss:
        raise ConfigError(f"{where}: {path} defines no loss(self, obj, x, y, progress); {expected}")
    own = cls.__dict__.get("name")
    if own is not None and own != path:
        raise ConfigError(f"{where}: {path} sets name = {own!r}; a method by import path is named by its path "
                          "(leave name out)")
    cls.name = path  # its name in run specs, tags and the registry: a spec written with it loads it again
    return register(cls)


# --- parameters: a default and a check, declared as a dataclass field -----------------------------

def param(default: Any, check: Check, expected: str) -> Any:
    """A method parameter: its default, and the check its value must pass (``expected`` says what passes)."""
    return dataclasses.field(default=default, metadata={"check": check, "expected": expected})


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def at_least(low: float) -> Check:
    return lambda v: _number(v) and v >= low


def above(low: float) -> Check:
    return lambda v: _number(v) and v > low


def one_of(*values: Any) -> Check:
    return lambda v: v in values


def integer(low: int) -> Check:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def group_list(v: Any) -> bool:
    return v is None or (isinstance(v, tuple) and bool(v) and all(isinstance(g, int) and not isinstance(g, bool)
                                                                   for g in v))


GROUPS = "a non-empty list of group indices (0 the first, -1 the last), or null for every group"
FORMS: tuple[str, ...] = ("code", "paper")  # the distance of two normalised vectors: atlib.attention.distance
BETA_SCHEDULES: tuple[str, ...] = ("constant", "linear", "step")
BETA_STEPS = (0.3, 0.6, 0.8)  # the "step" schedule: beta x BETA_GAMMA at these fractions of training
BETA_GAMMA = 0.2


def form(default: str = "code") -> Any:
    return param(default, one_of(*FORMS), f"one of {', '.join(FORMS)}")


def groups(default: tuple[int, ...] | None = None) -> Any:
    return param(default, group_list, GROUPS)


def schedule(default: str = "constant") -> Any:
    return param(default, one_of(*BETA_SCHEDULES), f"one of {', '.join(BETA_SCHEDULES)}")


# --- what a loss returns, and what it may use of the objective ------------------------------------

class Step(NamedTuple):
    """One batch's loss, the student's logits, and the loss's terms (detached scalars, for logging)."""

    loss: Tensor
    logits: Tensor
    terms: dict[str, Tensor]


class Objective(Protocol):
    """What a method's loss may use of the objective it is given (``atlib.losses.Objective`` provides it): the
    networks, the compared groups and the adapters, and the shapes of loss the methods compose. Declared here so
    that a method needs nothing from above the spec, not even for its annotations."""

    method: Method
    student: nn.Module
    teacher: nn.Module | None
    adapters: nn.ModuleList
    groups: tuple[int, ...]

    def teacher_outputs(self, x: Tensor) -> tuple[Tensor, list[Tensor]]: ...

    def taught(self, x: Tensor, y: Tensor) -> dict[str, Tensor]: ...

    def cross_entropy(self, x: Tensor, y: Tensor) -> Step: ...

    def transfer(self, x: Tensor, y: Tensor, name: str, term: Callable[[int, Tensor, Tensor], Tensor] | None,
                 weight: float, kd: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None) -> Step: ...

    def gradient_penalty(self, x: Tensor, y: Tensor, difference: Callable[[Tensor], Tensor], weight: float,
                         form: str) -> Step: ...

    def input_gradient(self, model: nn.Module, x: Tensor, y: Tensor, create_graph: bool) -> tuple[Tensor, Tensor]:
        ...


# --- the base classes ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """A training method: its parameters are the fields of a subclass (with defaults and checks), its loss
    is :meth:`loss`. The class attributes say what the objective must provide."""

    name: ClassVar[str]
    needs_teacher: ClassVar[bool] = False
    compares_groups: ClassVar[bool] = False  # the objective checks the student's and teacher's group shapes
    adapters: ClassVar[bool] = False  # a trainable 1x1 convolution maps each student group to the teacher's width
    reads_logits: ClassVar[bool] = False  # the loss reads the teacher's logits (KD)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | str, where: str = "method") -> Method:
        """Build from ``{"name": ..., **params}``; an unknown method, parameter or value is a ConfigError."""
        cfg = {"name": cfg} if isinstance(cfg, str) else dict(cfg)
        method = lookup(cfg.pop("name", None), f"{where}.name")
        unknown = set(cfg) - method.parameters()
        if unknown:
            allowed = ", ".join(sorted(method.parameters())) or "none"
            raise ConfigError(f"{where}: method {method.name!r} takes no parameter(s) {', '.join(sorted(unknown))}; "
                              f"its parameters are: {allowed}")
        # lists become tuples: a method is frozen and hashable
        value = method(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()})
        value.check(where)
        return value

    @classmethod
    def parameters(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))

    def check(self, where: str = "method") -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if "check" in f.metadata and not f.metadata["check"](value):  # a plain field is not checked
                raise ConfigError(f"{where}.{f.name}: expected {f.metadata['expected']}, got {value!r}")

    def params(self) -> dict[str, Any]:
        """The name and every parameter, for the run spec and logging."""
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    def transfers(self, epoch: int) -> bool:
        """Whether the method's own loss is on in (0-based) ``epoch`` (before it, the loss is the plain CE)."""
        return True

    def logged_beta(self, progress: float) -> float | None:
        """The weight of the transfer term at ``progress``, where it changes during training (logged per epoch)."""
        return None

    def group_indices(self, n: int) -> tuple[int, ...]:
        """The method's ``groups`` among ``n`` as indices from 0 (-1 is the last); all of them for None, or
        without the parameter. An index outside -n..n-1 is a ConfigError."""
        chosen = getattr(self, "groups", None)
        if chosen is None:
            return tuple(range(n))
        if any(not -n <= g < n for g in chosen):
            raise ConfigError(f"method.groups: {list(chosen)} out of range for {n} groups "
                              "(0 is the first, -1 the last)")
        return tuple(g % n for g in chosen)

    def sizes_must_match(self) -> bool:
        """Whether a compared group must have the same height and width in the student and the teacher."""
        return False

    size_hint: ClassVar[str] = ""  # what to change when they do not (said after "needs equal sizes")

    def teacher_group(self, i: int, t: Tensor) -> Tensor:
        """What the loss reads of the teacher's activation ``t`` of the ``i``-th compared group: the activation
        itself, unless the method needs less of it (AT: its attention map, a C-th of the size)."""
        return t

    def teacher_targets(self, obj: Objective, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Everything the loss reads of the frozen teacher for the images ``x`` (labels ``y``), as tensors whose
        row b depends on image b alone: a run whose inputs are finite computes them once per input and looks
        them up (atlib.teacher_cache). Keys: "logits" where :attr:`reads_logits`, "g<index>" per compared group."""
        if not self.needs_teacher:
            return {}
        yt, gt = obj.teacher_outputs(x)
        out = {"logits": yt} if self.reads_logits else {}
        return out | {f"g{g}": self.teacher_group(i, gt[g]) for i, g in enumerate(obj.groups)}

    def loss(self, obj: Objective, x: Tensor, y: Tensor, progress: float) -> Step:
        """The loss of one batch at ``progress`` in [0, 1) of training; ``obj`` holds the networks."""
        raise NotImplementedError(f"{type(self).__name__} defines no loss")


@dataclass(frozen=True)
class Delayed(Method):
    """A method whose own loss starts at a 1-based epoch, counted as the learning-rate milestones are: start_epoch
    60 and a drop at epoch 60 act from the same step; 0 and 1: from the start (Table 5)."""

    start_epoch: int = param(0, integer(0), "an integer >= 0")

    def transfers(self, epoch: int) -> bool:
        return epoch + 1 >= self.start_epoch


@dataclass(frozen=True)
class Weighted(Delayed):
    """A transfer term weighted by beta."""

    beta: float = param(1e3, at_least(0), "a number >= 0")

    def beta_at(self, progress: float) -> float:
        return self.beta

    def logged_beta(self, progress: float) -> float | None:
        return self.beta_at(progress) if self.start_epoch else None


@dataclass(frozen=True)
class Scheduled(Weighted):
    """beta on a schedule over training: constant, linear decay to 0, or x0.2 at 30, 60 and 80%."""

    beta_schedule: str = schedule()

    def beta_at(self, progress: float) -> float:
        """beta at ``progress`` in [0, 1] of training (0 on the first batch, 1 on the last)."""
        if self.beta_schedule == "linear":
            return self.beta * (1.0 - progress)
        if self.beta_schedule == "step":
            return self.beta * BETA_GAMMA ** sum(progress >= m for m in BETA_STEPS)
        return self.beta

    def logged_beta(self, progress: float) -> float | None:
        return self.beta_at(progress) if self.beta_schedule != "constant" or self.start_epoch else None
