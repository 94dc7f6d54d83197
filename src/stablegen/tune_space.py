"""Search spaces of `stablegen tune`: a YAML mapping of recipe keys to distributions.

    optim.g.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true, also: [optim.d.lr]}
    optim.g.betas.0: {type: float, low: 0.0, high: 0.9, step: 0.1}   # element 0 of a list value
    model.loss: {type: categorical, choices: [ns, hinge]}
    model.width: {type: int, low: 64, high: 512, step: 64}
    fixed: {train.steps: 1500, eval.n: 1000}                       # plain overrides

Built-in spaces live in stablegen/recipes/spaces/NAME.yaml. Checking the keys against a recipe
is stablegen.tune's job (it needs the recipe); this module checks the distributions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from .recipe import RecipeError

if TYPE_CHECKING:
    import optuna


class SpaceError(RecipeError):
    """A search space that cannot be used; the message names the file and the key."""


class _Param(BaseModel):
    model_config = ConfigDict(extra="forbid")

    also: list[str] = []  # other recipe keys set to the same value (tie optim.d.lr to optim.g.lr)


class FloatParam(_Param):
    type: Literal["float"]  # a real number
    low: float  # lower bound, inclusive
    high: float  # upper bound, inclusive
    log: bool = False  # sample log-uniformly (needs low > 0)
    step: float | None = Field(None, gt=0)  # discretization; gives the grid sampler its values
    grid: list[float] | None = None  # explicit values for the grid sampler

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        _check_bounds(self.low, self.high, self.log, self.grid)
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined; give grid: [...] for a log-spaced grid")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        value = trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)
        return float(f"{value:.12g}") if self.step else value  # 0.30000000000000004 -> 0.3

    def grid_values(self) -> list[float] | None:
        if self.grid is not None:
            return list(self.grid)
        if self.step is None:
            return None
        n = int(math.floor((self.high - self.low) / self.step + 1e-9))
        return [min(float(f"{self.low + i * self.step:.12g}"), self.high) for i in range(n + 1)]

    def corners(self) -> list[float]:
        return [self.low, self.high, *(self.grid or [])]

    def contains(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not self.low <= v <= self.high:
            return False
        return self.step is None or abs((v - self.low) / self.step - round((v - self.low) / self.step)) < 1e-8


class IntParam(_Param):
    type: Literal["int"]  # an integer
    low: int  # lower bound, inclusive
    high: int  # upper bound, inclusive
    log: bool = False  # sample log-uniformly (needs low > 0, step 1)
    step: int = Field(1, ge=1)  # spacing of the values
    grid: list[int] | None = None  # explicit values for the grid sampler

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        _check_bounds(self.low, self.high, self.log, self.grid)
        if self.log and self.step != 1:
            raise ValueError("log needs step 1 (Optuna's rule for log-spaced integers)")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, step=self.step, log=self.log)

    def grid_values(self) -> list[int]:
        return list(self.grid) if self.grid is not None else list(range(self.low, self.high + 1, self.step))

    def corners(self) -> list[int]:
        return [self.low, self.high, *(self.grid or [])]

    def contains(self, v: Any) -> bool:
        return (isinstance(v, int) and not isinstance(v, bool) and self.low <= v <= self.high
                and (v - self.low) % self.step == 0)


Choice = Union[bool, int, float, str, None]


class CategoricalParam(_Param):
    type: Literal["categorical"]  # one of a list of values
    choices: list[Choice] = Field(min_length=1)  # the values (strings, numbers, booleans, null)

    @model_validator(mode="after")
    def _check(self) -> CategoricalParam:
        if len({repr(c) for c in self.choices}) < len(self.choices):
            raise ValueError(f"choices {self.choices} hold a value twice")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> Choice:
        return trial.suggest_categorical(name, self.choices)

    def grid_values(self) -> list[Choice]:
        return list(self.choices)

    def corners(self) -> list[Choice]:
        return list(self.choices)

    def contains(self, v: Any) -> bool:
        return any(type(v) is type(c) and v == c for c in self.choices)


Param = Annotated[Union[FloatParam, IntParam, CategoricalParam], Field(discriminator="type")]
_PARAM: TypeAdapter = TypeAdapter(Param)


def _check_bounds(low: float, high: float, log: bool, grid: list | None) -> None:
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high})")
    if log and low <= 0:
        raise ValueError(f"log needs low > 0, got {low}")
    outside = [g for g in grid or [] if not low <= g <= high]
    if outside:
        raise ValueError(f"grid values {outside} lie outside [low, high] = [{low}, {high}]")


@dataclass
class Space:
    """A search space: recipe key -> distribution, plus fixed overrides."""

    params: dict[str, FloatParam | IntParam | CategoricalParam]
    fixed: dict[str, Any]
    source: str  # the file, for messages

    def grid(self) -> dict[str, list]:
        """The grid sampler's search space; every parameter needs finitely many values."""
        out = {}
        for key, p in self.params.items():
            values = p.grid_values()
            if values is None:
                raise SpaceError(f"space {self.source}: --sampler grid needs every parameter categorical or with "
                                 f"step / grid values; {key!r} is a continuous float (add step: or grid: [...])")
            out[key] = values
        return out

    def to_json(self) -> dict:
        return {"params": {k: p.model_dump(mode="json") for k, p in self.params.items()}, "fixed": self.fixed}


def builtin_spaces() -> list[str]:
    folder = resources.files("stablegen.recipes").joinpath("spaces")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml")) if folder.is_dir() else []


def load_space(source: str | Path | dict) -> Space:
    """A Space from a YAML file, a built-in space name (stablegen/recipes/spaces) or a dict."""
    if isinstance(source, dict):
        raw, name = dict(source), "<dict>"
    else:
        name = str(source)
        if Path(name).is_file():
            text = Path(name).read_text()
        elif name in builtin_spaces():
            text = resources.files("stablegen.recipes").joinpath("spaces", f"{name}.yaml").read_text()
        else:
            raise SpaceError(f"space file {name} does not exist "
                             f"(built-in spaces: {', '.join(builtin_spaces()) or 'none'})")
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise SpaceError(f"space file {name} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SpaceError(f"space {name} must be a mapping of recipe keys to distributions, got {type(raw).__name__}")
    fixed = raw.pop("fixed", None) or {}
    if not isinstance(fixed, dict):
        raise SpaceError(f"space {name}: fixed must be a mapping of recipe keys to values, got {fixed!r}")
    params = {}
    for key, spec in raw.items():
        if not isinstance(spec, dict):
            raise SpaceError(f"space {name}: {key!r} must be a distribution such as {{type: float, low: 1.0e-4, "
                             f"high: 1.0e-2, log: true}}, got {spec!r} (plain values go under fixed:)")
        try:
            params[str(key)] = _PARAM.validate_python(spec)
        except ValidationError as e:
            msgs = [".".join(map(str, err["loc"][1:])) + (": " if len(err["loc"]) > 1 else "")
                    + err["msg"].removeprefix("Value error, ") for err in e.errors()]  # loc[0]: the type
            raise SpaceError(f"space {name}: {key!r}: {'; '.join(msgs)} "
                             f"(types: float, int, categorical)") from None
    if not params:
        raise SpaceError(f"space {name} names no parameter to search")
    targets = [k for key, p in params.items() for k in (key, *p.also)]
    twice = sorted({k for k in targets if targets.count(k) > 1} | (set(targets) & set(fixed)))
    if twice:
        raise SpaceError(f"space {name}: {', '.join(map(repr, twice))} set twice (by two parameters or also fixed)")
    return Space(params, fixed, name)
