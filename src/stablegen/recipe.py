"""Typed recipes: YAML files with sections data / model / optim / train / guard / eval.

A recipe file holds only what differs from the defaults below. Built-in recipes live in
stablegen/recipes/*.yaml and are named by their file stem. Dotted `key=value` overrides
(values parsed as YAML scalars) apply on top; unknown keys fail with "did you mean".
"""

from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .methods import FAMILIES


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the key or file and what is allowed."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    name: str = "digits"  # a toy, digits, stacked-digits, fashion-mnist, sines, grammar, folder, npy, idx, csv, python
    path: str | None = None  # file or folder of user data ({split} in it: split by name); fashion-mnist: IDX folder
    batch_size: int = Field(64, ge=1)  # samples per step (per phase repeat)
    size: int | None = Field(None, ge=2)  # resize images to size x size
    labels: bool = False  # also load integer labels (class-conditional models)
    split: Literal["all", "train", "val", "test"] = "all"  # what to train on (splits: docs/data.md)
    val_fraction: float = Field(0.1, ge=0, lt=1)  # user data without {split}: seeded share of the rows kept for val
    test_fraction: float = Field(0.1, ge=0, lt=1)  # user data without {split}: seeded share of the rows kept for test
    normalize: Literal["none", "minmax", "meanstd"] = "none"  # float data per channel: min..max -> [-1, 1] or z-score
    norm_shift: list[float] | None = None  # normalize's per-channel shift (None: fitted; a run's recipe.yaml keeps it)
    norm_scale: list[Annotated[float, Field(gt=0)]] | None = None  # its scale: the method sees (x - shift) / scale
    n: int = Field(50_000, ge=1)  # samples drawn from a toy or synthetic distribution
    length: int = Field(32, ge=2)  # sequence length (sines, grammar, csv windows)
    stride: int = Field(1, ge=1)  # csv: step between windows
    binarize: bool = False  # images -> {-1, 1} at threshold 0 (RBMs)
    seed: int = 0  # seed of the synthetic data itself and of the split of user data (not of training)


class OptimConfig(Strict):
    name: Literal["adam", "adamw", "nadam", "sgd", "rmsprop"] = "adam"  # optimizer (nadam: Nesterov momentum)
    lr: float = Field(2e-4, gt=0)  # peak learning rate
    betas: tuple[float, float] = (0.5, 0.999)  # Adam / NAdam betas (beta1 0.5 is the GAN default)
    eps: float = Field(1e-8, gt=0)  # Adam epsilon
    weight_decay: float = Field(0.0, ge=0)  # L2 (adam, sgd) or decoupled (adamw)
    momentum: float = Field(0.0, ge=0)  # sgd / rmsprop momentum
    clip: float | None = Field(None, gt=0)  # max global gradient norm of the phase (None: no clip)
    warmup: int = Field(0, ge=0)  # linear warmup steps
    schedule: Literal["constant", "cosine", "wsd"] = "constant"  # after warmup (wsd: constant, then cosine cooldown)
    decay_fraction: float = Field(0.2, gt=0, le=1)  # wsd: share of the steps spent in the cooldown
    min_lr: float = Field(0.0, ge=0)  # cosine / wsd floor, as a fraction of lr
    lookahead: int = Field(0, ge=0)  # Lookahead every k steps (0: off); on both GAN players: Lookahead-minmax
    lookahead_alpha: float = Field(0.5, gt=0, le=1)  # Lookahead: step of the slow weights toward the fast
    optimism: bool = False  # optimistic step theta - 2 u_t + u_{t-1} (Daskalakis et al. 2018: Optimistic Adam)


class TrainConfig(Strict):
    steps: int = Field(2000, ge=1)  # training steps (each runs every phase)
    seed: int = 0  # seeds weights, noise and data order
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"  # auto: cuda when available
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp16 uses a GradScaler
    grad_scaler: bool = True  # fp16: dynamic loss scaling (Micikevicius et al. 2018); off only to test
    deterministic: bool = True  # torch.use_deterministic_algorithms (bitwise resume on CPU)
    ema: float = Field(0.0, ge=0, lt=1)  # EMA decay of the method's ema_module() (weights and buffers); 0 = off
    ema_start: int = Field(0, ge=0)  # step at which the EMA starts averaging
    ema_warmup: bool = True  # decay ramps as min(ema, (1 + t) / (10 + t)) over the t-th average
    log_every: int = Field(50, ge=1)  # steps between metrics.jsonl lines
    sample_every: int = Field(500, ge=0)  # steps between sample grids (0 = only at the end)
    sample_n: int = Field(64, ge=1)  # samples per grid (toys: 2,000 points)
    checkpoint_every: int = Field(1000, ge=0)  # steps between checkpoints (0 = only at the end)
    keep_checkpoints: int = Field(3, ge=1)  # newest checkpoints kept on disk
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)
    compile: bool = False  # torch.compile the method's nets
    channels_last: bool = False  # memory format for conv nets on GPU
    progress: bool = True  # tqdm progress bar


Action = Literal["warn", "skip", "rollback", "stop"]


class GuardConfig(Strict):
    enabled: bool = True  # the StabilityGuard watches every step
    nonfinite: Literal["skip", "rollback", "stop"] = "skip"  # non-finite loss/gradient: never stepped
    max_skips: int = Field(10, ge=1)  # consecutive skipped steps before a rollback
    spike: Action = "rollback"  # loss spike (robust z-score)
    explosion: Action = "rollback"  # gradient-norm explosion (robust z-score)
    window: int = Field(100, ge=10)  # steps in the running window of the z-scores
    z_threshold: float = Field(8.0, gt=0)  # robust z-score (median / MAD) that counts as an outlier
    patience: int = Field(3, ge=1)  # consecutive outlier steps before acting
    spike_after: int = Field(500, ge=0)  # no loss-spike / gradient-explosion verdicts before this step
    saturation: Action = "rollback"  # GAN critic saturation with vanishing G gradient
    saturation_acc: float = Field(0.99, gt=0.5, le=1)  # critic accuracy that counts as saturated
    saturation_grad: float = Field(0.1, gt=0, le=1)  # ... with G's gradient norm under this share of its unsaturated level
    saturation_steps: int = Field(200, ge=1)  # ... both held for this many steps
    collapse: Action = "rollback"  # mode collapse (sample diversity falls)
    collapse_ratio: float = Field(0.3, gt=0, lt=1)  # diversity / data diversity that counts as collapse
    collapse_after: int = Field(500, ge=0)  # no collapse checks before this step (G still spreading out)
    coverage: Action = "warn"  # classes lost (mixtures, digit images); docs/guide.md says why not rollback
    collapse_coverage: float = Field(1.0, gt=0, le=1)  # ... the share of the classes the samples must keep
    quality: Action = "warn"  # the share of high-quality samples falls (2-D mixtures)
    quality_drop: float = Field(0.25, gt=0, lt=1)  # ... below this fraction of its best
    quality_min: float = Field(0.2, gt=0, le=1)  # ... judged once the share has reached this
    posterior_collapse: Action = "warn"  # VAE active units fall
    min_active_fraction: float = Field(0.05, ge=0, le=1)  # fewer active latent units than this: collapse
    check_every: int = Field(50, ge=1)  # steps between health / diversity checks
    snapshot_every: int = Field(200, ge=1)  # steps between in-memory good snapshots
    max_rollbacks: int = Field(5, ge=0)  # budget; then stop with a diagnosis
    lr_factor: float = Field(0.5, gt=0, le=1)  # learning rate multiplier on each rollback ...
    lr_drop_from: int = Field(1, ge=1)  # ... from this rollback of the run on (2: the first keeps the lr)
    reg_factor: float = Field(2.0, ge=1)  # GP / R1 weight multiplier on each rollback


class EvalConfig(Strict):
    every: int = Field(0, ge=0)  # steps between periodic evals (0 = only at the end)
    metrics: list[str] = []  # metric names, see `stablegen eval --help`
    n: int = Field(2000, ge=1)  # generated samples per eval
    features: Literal["auto", "digits", "fashion", "inception", "pixels"] = "auto"  # feature space of FID/KID/PRDC
    inception_weights: str | None = None  # local file of the FID Inception weights
    ema: bool = True  # evaluate the EMA weights when the run keeps them
    split: Literal["auto", "train", "val", "test"] = "auto"  # data compared with (auto: test unless trained on)


def model_config_union() -> Any:
    """The type of a recipe's model section: one of the configs of the families in FAMILIES now,
    told apart by model.family."""
    return Annotated[Union[tuple(f.config for f in FAMILIES.values())], Field(discriminator="family")]


ModelConfig = model_config_union()


class Recipe(Strict):
    name: str = "custom"  # run name prefix
    description: str = ""  # one line, shown by `stablegen recipes`
    data: DataConfig = DataConfig()
    model: ModelConfig
    optim: dict[str, OptimConfig] = {}  # per phase (gan: d and g; others: main)
    train: TrainConfig = TrainConfig()
    guard: GuardConfig = GuardConfig()
    eval: EvalConfig = EvalConfig()


_BUILT_IN_FAMILIES = tuple(f.config for f in FAMILIES.values())
_RECIPE_TYPES: dict[tuple, type[Recipe]] = {}


def recipe_type() -> type[Recipe]:
    """Recipe, or (when families were registered in FAMILIES after import) a subclass of it whose
    model section is a union over the families registered now."""
    configs = tuple(f.config for f in FAMILIES.values())
    if configs == _BUILT_IN_FAMILIES:
        return Recipe
    if configs not in _RECIPE_TYPES:
        _RECIPE_TYPES[configs] = create_model("Recipe", __base__=Recipe, __module__=__name__,
                                              model=(model_config_union(), ...))
    return _RECIPE_TYPES[configs]


DEFAULT_RECIPE = "dcgan-digits"
SECTIONS = {"data": DataConfig, "train": TrainConfig, "guard": GuardConfig, "eval": EvalConfig, "optim": OptimConfig}


# ---- built-ins -----------------------------------------------------------------------------
def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("stablegen.recipes").iterdir() if p.name.endswith(".yaml"))


def builtin_descriptions() -> dict[str, str]:
    return {name: str(_read_builtin(name).get("description", "")) for name in builtin_names()}


def _read_builtin(name: str) -> dict:
    text = resources.files("stablegen.recipes").joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text) or {}


def _read_file(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe file {path} is not valid YAML: {e}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe file {path} must hold a mapping of sections, got {type(raw).__name__}")
    return raw


def read_raw(source: str | Path | dict | None) -> dict:
    """The raw mapping of a built-in name, a YAML path or a dict (None: the default recipe)."""
    if source is None:
        source = DEFAULT_RECIPE
    if isinstance(source, dict):
        return copy.deepcopy(source)
    text = str(source)
    if text.endswith((".yaml", ".yml")) or Path(text).is_file():
        raw = _read_file(Path(text))
        raw.setdefault("name", Path(text).stem)
        return raw
    names = builtin_names()
    if text not in names:
        hint = difflib.get_close_matches(text, names, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else f"; built-in recipes: {', '.join(names)}"
        raise RecipeError(f"no built-in recipe or file named {text!r}{extra}")
    raw = _read_builtin(text)
    raw.setdefault("name", text)
    return raw


# ---- overrides -----------------------------------------------------------------------------
def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['train.steps=100', 'model.loss=ns'] -> {'train.steps': 100, 'model.loss': 'ns'}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {item!r} is not of the form key=value (e.g. train.steps=500)")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        parts = key.split(".")
        node = raw
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"override {key!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return raw


# ---- validation ----------------------------------------------------------------------------
def _fields_at(loc: tuple, raw: dict) -> list[str]:
    """Allowed keys of the section at `loc` (for 'did you mean')."""
    if not loc:
        return list(Recipe.model_fields)
    head = loc[0]
    if head == "model":
        family = (raw.get("model") or {}).get("family")
        cfg = FAMILIES[family].config if family in FAMILIES else None
        return list(cfg.model_fields) if cfg else ["family"]
    if head == "optim":
        return list(OptimConfig.model_fields) if len(loc) >= 2 else []
    model = SECTIONS.get(head)
    return list(model.model_fields) if model else []


def _explain(err: dict, raw: dict) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p in FAMILIES and p != err["loc"][-1]))
    if err["loc"][:1] == ("model",) and len(err["loc"]) >= 2 and err["loc"][1] in FAMILIES:
        loc = ("model",) + tuple(err["loc"][2:])
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _fields_at(loc[:-1], raw)
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        tail = f"; did you mean {'.'.join(str(p) for p in loc[:-1] + (hint[0],))!r}?" if hint else ""
        return f"unknown recipe key {key!r}{tail} (allowed here: {', '.join(allowed)})"
    if kind == "union_tag_invalid":
        given = err["input"].get("family") if isinstance(err["input"], dict) else err["input"]
        return f"recipe key model.family: got {given!r}; allowed: {', '.join(FAMILIES)}"
    if kind == "union_tag_not_found":
        return f"recipe key model.family is missing; allowed: {', '.join(FAMILIES)}"
    if kind == "missing":
        return f"recipe key {key!r} is required"
    if kind == "nets":  # base.FamilyConfig: the message names the net and what is allowed
        return f"recipe key {key!r}: {err['msg']}"
    given = err.get("input")
    return f"recipe key {key!r}: got {given!r}; {err['msg'].lower()}"


def validate(raw: dict) -> Recipe:
    if "model" not in raw:
        raise RecipeError(f"the recipe has no model section; give model.family (one of {', '.join(FAMILIES)})")
    try:
        return recipe_type().model_validate(raw)
    except ValidationError as e:
        msgs = [_explain(err, raw) for err in e.errors()]
        raise RecipeError("\n".join(dict.fromkeys(msgs))) from None


def load_recipe(source: str | Path | dict | None = None, overrides: dict[str, Any] | list[str] | None = None) -> Recipe:
    """A validated Recipe from a built-in name, YAML path or dict, with overrides applied."""
    raw = read_raw(source)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    if overrides:
        raw = apply_overrides(raw, overrides)
    return validate(raw)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


# ---- resuming with a changed recipe ----------------------------------------------------------
# Keys that may change when a run is resumed: they decide how long it runs, what it writes and
# how it is evaluated, never the arithmetic of the steps already taken (docs/guide.md).
SAFE_ON_RESUME = ("description", "train.steps", "train.progress", "train.log_every", "train.sample_every",
                  "train.sample_n", "train.checkpoint_every", "train.keep_checkpoints", "train.threads", "eval.")


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def changed_keys(before: Recipe, after: Recipe) -> list[str]:
    """Dotted keys whose value differs between two recipes."""
    a, b = _flatten(before.model_dump(mode="json")), _flatten(after.model_dump(mode="json"))
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def unsafe_changes(before: Recipe, after: Recipe) -> list[str]:
    """The changed keys that would make a resumed run differ from the one it continues."""
    return [k for k in changed_keys(before, after)
            if not any(k == s or (s.endswith(".") and k.startswith(s)) for s in SAFE_ON_RESUME)]
