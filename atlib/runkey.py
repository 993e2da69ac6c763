"""The run key: what a planned run is, and its run id (the one owner of the id's format).

    {dataset}/{recipe}/{model}/{variant}/seed{s}                                   no teacher
    {dataset}/{recipe}/{model}/{variant}-from-{teacher model}-seed{t}/seed{s}       the teacher's data and recipe
    {dataset}/{recipe}/{model}/{variant}-from-{teacher model}@{data}@{recipe}-seed{t}/seed{s}   their own

``variant`` is the method name plus the parameters that differ from the config's defaults (``at``,
``at-mapping=max-p=1``). A teacher is the ``baseline`` run of its model, so the student's id names only
its model, its seed and, where they differ from the student's, its data and recipe. The id is a relative
path: it names the run's folder under ``results/runs/`` and its MLflow ``run`` tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigError

FROM = "-from-"
TEACHER_VARIANT = "baseline"  # a student learns from the baseline run of its teacher's model
_SEED = re.compile(r"seed(0|[1-9][0-9]*)")


class RunIdError(ConfigError):
    """A run id that no run key formats: the message says which part is wrong."""


@dataclass(frozen=True)
class RunKey:
    dataset: str
    recipe: str
    model: str  # the model's slug: its name and options (atlib.spec.ModelSpec.slug)
    variant: str
    teacher: RunKey | None
    seed: int

    def __post_init__(self) -> None:
        for name in ("dataset", "recipe", "model", "variant"):
            value = getattr(self, name)
            # "@" joins the teacher's model, data and recipe; "-from-" starts the teacher; "/" separates parts
            banned = ("/", FROM, "@") if name != "variant" else ("/", FROM)
            if not isinstance(value, str) or not value or any(b in value for b in banned):
                raise RunIdError(f"run key {name} {value!r}: expected a non-empty text without "
                                 f"{', '.join(map(repr, banned))}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise RunIdError(f"run key seed {self.seed!r}: expected an integer >= 0")
        t = self.teacher
        if t is not None and (t.variant != TEACHER_VARIANT or t.teacher is not None):
            raise RunIdError(f"run key teacher {t}: a teacher is the {TEACHER_VARIANT!r} run of its model, "
                             "without a teacher of its own")

    def __str__(self) -> str:
        return f"{self.dataset}/{self.recipe}/{self.model}/{self.student_part}/seed{self.seed}"

    @property
    def student_part(self) -> str:
        """The id's fourth part: the variant, and the teacher a student learns from."""
        t = self.teacher
        if t is None:
            return self.variant
        # a teacher trained on other data or with another recipe says so: ...-from-MODEL@DATA@RECIPE-seedT
        origin = f"@{t.dataset}@{t.recipe}" if (t.dataset, t.recipe) != (self.dataset, self.recipe) else ""
        return f"{self.variant}{FROM}{t.model}{origin}-seed{t.seed}"

    @classmethod
    def parse(cls, run_id: str) -> RunKey:
        """The key of a planned run id; anything else is a RunIdError naming the id and the part."""
        try:
            return cls._parse(str(run_id))
        except RunIdError as e:
            raise RunIdError(f"run id {run_id!r}: {e}") from None

    @classmethod
    def _parse(cls, run_id: str) -> RunKey:
        parts = run_id.split("/")
        if len(parts) != 5:
            raise RunIdError(f"expected 5 parts dataset/recipe/model/variant/seedN, got {len(parts)}")
        dataset, recipe, model, middle, last = parts
        variant, _, teacher = middle.partition(FROM)
        if not teacher:
            return cls(dataset, recipe, model, variant, None, _seed(last))
        t_model, _, t_seed = teacher.rpartition("-")
        t_model, *origin = t_model.split("@")
        if len(origin) not in (0, 2) or tuple(origin) == (dataset, recipe):
            raise RunIdError(f"expected the teacher as MODEL-seedN, or MODEL@DATA@RECIPE-seedN where its data or "
                             f"recipe differ from the student's, got {teacher!r}")
        t_dataset, t_recipe = origin or (dataset, recipe)
        t_key = cls(t_dataset, t_recipe, t_model, TEACHER_VARIANT, None, _seed(t_seed))
        return cls(dataset, recipe, model, variant, t_key, _seed(last))


def _seed(text: str) -> int:
    if not _SEED.fullmatch(text):
        raise RunIdError(f"expected seedN (N an integer >= 0 without leading zeros), got {text!r}")
    return int(text.removeprefix("seed"))
