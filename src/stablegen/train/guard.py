"""StabilityGuard: detect instability as it happens and act on it.

Detectors (each raises a typed Event with its evidence):
  nonfinite        a non-finite loss or gradient norm, checked before the optimizer step;
                   the update is never applied (after `max_skips` in a row: roll back). Under
                   fp16 with a GradScaler a non-finite gradient is the scaler's routine overflow
                   until it has happened `max_skips` times in a row
  loss_spike       robust z-score of a phase's loss over a running window (median / MAD,
                   Iglewicz & Hoaglin 1993) above z_threshold for `patience` steps
  grad_explosion   the same on log gradient norms
  d_saturation     GAN critic accuracy >= saturation_acc while the generator's gradient norm
                   has vanished (under saturation_grad x its level at the last check where the
                   critic was not saturated), both held for saturation_steps (Arjovsky & Bottou
                   2017, "Towards Principled Methods for Training GANs", Thm. 2.4: a critic
                   that is sure leaves the generator no gradient). A critic saturated since the
                   start has no such level to compare with and no better state to return to:
                   one warning, on the accuracy alone
  mode_collapse    sample diversity (mean pairwise distance) falls below collapse_ratio x the
                   data's after having reached it (since the state the weights came from); a
                   generator that has not spread out yet gets one warning, never a rollback
  class_coverage   the share of the classes the samples keep (2-D mixtures, digit images) falls
                   below collapse_coverage after having reached it; reported once per fall
  sample_quality   the share of high-quality samples (2-D mixtures: within 3 std of a mode)
                   falls below quality_drop x its best after reaching quality_min: the samples
                   drift off the modes while still covering them (a critic gone blind)
  posterior_collapse  a VAE's share of active latent units below min_active_fraction for
                   `patience` checks; reported once per fall
Actions: warn, skip (the update), rollback (to the last good in-memory snapshot, with the
learning rate times lr_factor and GP / R1 weights times reg_factor, both compounding over the
rollbacks of a run), stop (with a diagnosis).
A budget of rollbacks bounds the recovery; past it the guard stops the run.
The guard decides; the trainer carries out (it owns the weights and the snapshot).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor

ACTION_RANK = {"warn": 0, "skip": 1, "rollback": 2, "stop": 3}


@dataclass
class Event:
    step: int
    detector: str
    action: str
    message: str
    evidence: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Fall:
    """A share the samples must not lose once reached (class coverage, the high-quality share):
    its last value, its best since the state the weights came from, its value at the last
    snapshot, the checks in a row it has been low, and whether this fall was reported."""

    value: float | None = None
    peak: float = 0.0
    snapshot: float | None = None
    low_checks: int = 0
    reported: bool = False
    back_checks: int = 0  # checks in a row the share has been recovered since it was reported

    def observe(self, value: float, is_low: Callable[[float, float], bool], patience: int,
                recovered: Callable[[float, float], bool] | None = None, hold: int = 1) -> bool:
        """Record a check; True when `is_low(value, peak)` has held for `patience` checks in a
        row and this fall was not reported yet (one event per fall, none while it stays low).
        A fall ends when `recovered(value, peak)` (default: no longer low) has held for `hold`
        checks in a row, so a share that wavers about the threshold is reported once, not at
        every crossing."""
        self.value, self.peak = value, max(self.peak, value)
        low = is_low(value, self.peak)
        self.low_checks = self.low_checks + 1 if low else 0
        back = not low if recovered is None else recovered(value, self.peak)
        self.back_checks = self.back_checks + 1 if back else 0
        self.reported = self.reported and self.back_checks < hold
        if low and self.low_checks >= patience and not self.reported:
            self.low_checks, self.reported, self.back_checks = 0, True, 0
            return True
        return False

    def restore(self) -> None:
        """After a rollback: judged from the restored snapshot's value, not the peak since."""
        self.value, self.peak = self.snapshot, self.snapshot or 0.0
        self.low_checks, self.reported, self.back_checks = 0, False, 0


def robust_z(window: deque, value: float) -> float:
    """(value - median) / (1.4826 MAD) of the window; 0 when the window is too short."""
    if len(window) < max(10, window.maxlen // 2):
        return 0.0
    xs = sorted(window)
    med = xs[len(xs) // 2]
    mad = sorted(abs(x - med) for x in xs)[len(xs) // 2]
    scale = 1.4826 * mad + 1e-6 * (abs(med) + 1e-12)
    return (value - med) / scale


class StabilityGuard:
    def __init__(self, cfg, uses_scaler: bool = False, nonfinite_hint: str = ""):
        self.cfg = cfg
        self.uses_scaler = uses_scaler  # fp16 with a GradScaler: overflow is routine, not an event
        self.nonfinite_hint = nonfinite_hint  # what the run's settings suggest about non-finite values
        self.events: list[Event] = []
        self.pending: Event | None = None  # strongest action requested this step
        self.lr_scale = 1.0
        self.reg_scale = 1.0  # GP / R1 weights relative to the recipe's (the method carries them out)
        self.rollbacks = 0
        self.skips_in_row: dict[str, int] = {}  # per phase: updates vetoed in a row
        self.overflows = 0
        self.updates: dict[str, int] = {}  # per phase: updates let through
        self.counts_from_start = True  # False after resuming a checkpoint that kept no update counts
        self.windows: dict[str, deque] = {}
        self.outliers: dict[str, int] = {}
        self.saturated_checks = 0
        self.g_grad_ref: float | None = None  # G's gradient norm at the last unsaturated check
        self.saturation_warned = False  # the "saturated since the start" warning is given once
        self.collapsed_checks = 0
        self.diversity: float | None = None  # the last diversity ratio measured
        self.peak_diversity = 0.0  # its highest value since the state the weights came from
        self.snapshot_diversity: float | None = None  # the ratio when the last snapshot was taken
        self.unspread_warned = False  # the "not spread out yet" warning is given once
        self.coverage = Fall()  # the share of the data's classes the samples keep
        self.quality = Fall()  # the share of high-quality samples
        self.active = Fall()  # a VAE's share of active latent units
        self.new_events: list[Event] = []

    # ---- per update ------------------------------------------------------------------------
    def allow_update(self, step: int, phase: str, loss: Tensor, grad_norm: Tensor,
                     weights_finite: Callable[[], bool] | None = None) -> bool:
        """True when the optimizer may apply this update. One host sync per call.
        `weights_finite` is asked only when the loss or gradient is non-finite: an update whose
        gradients were finite can still overflow the weights (a huge learning rate), and then
        skipping the next updates cannot help, so the guard rolls back at once."""
        if not self.cfg.enabled:
            return True
        loss_v, norm_v = torch.stack([loss.detach().float(), grad_norm.detach().float()]).tolist()
        if not (math.isfinite(loss_v) and math.isfinite(norm_v)):
            # counted per phase: one player's clean steps do not hide the other's vetoed ones
            skips = self.skips_in_row[phase] = self.skips_in_row.get(phase, 0) + 1
            broken = weights_finite is not None and not weights_finite()
            if self.uses_scaler and math.isfinite(loss_v) and skips < self.cfg.max_skips and not broken:
                self.overflows += 1  # the GradScaler lowers its scale and skips the step itself
                return False
            action = self.cfg.nonfinite
            if (skips >= self.cfg.max_skips or broken) and action == "skip":
                action = "rollback"
            hints = ["the weights themselves are non-finite: an earlier update with finite gradients "
                     "overflowed them (a learning rate far too high?)"] if broken else []
            hints += [] if self.updates.get(phase) or not self.counts_from_start else [
                f"no update of phase {phase!r} has been applied since the start: the initial weights or the "
                "data give non-finite values"]
            hints += [self.nonfinite_hint] if self.nonfinite_hint else []
            self._raise(Event(step, "nonfinite", action,
                              f"non-finite {'loss' if not math.isfinite(loss_v) else 'gradient'} in phase "
                              f"{phase!r}; update not applied ({skips} in a row"
                              f"{', the GradScaler lowering its scale at each' if self.uses_scaler else ''})"
                              + "".join(f"; {h}" for h in hints), {"loss": loss_v, "grad_norm": norm_v}))
            return False
        self.skips_in_row[phase] = 0
        self.updates[phase] = self.updates.get(phase, 0) + 1
        # upward only: a falling loss (a KL weight dropping at a new annealing cycle) is no instability
        ok = self._outlier(step, phase, "loss_spike", self.cfg.spike, f"loss/{phase}", loss_v, one_sided=True)
        ok &= self._outlier(step, phase, "grad_explosion", self.cfg.explosion, f"grad/{phase}",
                            math.log(norm_v + 1e-12), raw=norm_v, one_sided=True)
        return ok

    def _outlier(self, step: int, phase: str, detector: str, action: str, key: str, value: float,
                 raw: float | None = None, one_sided: bool = False) -> bool:
        window = self.windows.setdefault(key, deque(maxlen=self.cfg.window))
        z = robust_z(window, value)
        # the opening transient (a GAN's G loss rising as its critic learns) is no spike: the
        # window only gathers values before `spike_after`
        outlier = z > self.cfg.z_threshold if one_sided else abs(z) > self.cfg.z_threshold
        hit = outlier and step >= self.cfg.spike_after
        if not hit:
            self.outliers[key] = 0
            window.append(value)
            return True
        self.outliers[key] = self.outliers.get(key, 0) + 1
        if self.outliers[key] < self.cfg.patience:
            return True  # not yet: a single outlier is no instability
        what = "loss" if detector == "loss_spike" else "gradient norm"
        shown = value if raw is None else raw
        self._raise(Event(step, detector, action,
                          f"{what} of phase {phase!r} is an outlier (robust z = {z:.1f}) for "
                          f"{self.outliers[key]} steps", {"value": shown, "z": z}))
        self.outliers[key] = 0
        return action not in ("skip", "rollback", "stop")

    # ---- periodic checks ---------------------------------------------------------------
    def check_health(self, step: int, health: dict[str, float], diversity_ratio: float | None,
                     coverage: float | None = None, quality: float | None = None) -> None:
        if not self.cfg.enabled:
            return
        cfg = self.cfg
        if "d_acc" in health:
            self._check_saturation(step, health["d_acc"])
        if "active_fraction" in health and self.active.observe(
                health["active_fraction"], lambda v, peak: v < cfg.min_active_fraction, cfg.patience):
            self._raise(Event(step, "posterior_collapse", cfg.posterior_collapse,
                              f"only {health['active_fraction']:.0%} of latent units are active, {cfg.patience} "
                              "checks in a row: the decoder ignores the latent (try KL annealing or free bits)",
                              {"active_fraction": health["active_fraction"]}))
        if diversity_ratio is not None:
            self.diversity = diversity_ratio
            self.peak_diversity = max(self.peak_diversity, diversity_ratio)
        low = diversity_ratio is not None and diversity_ratio < cfg.collapse_ratio
        self.collapsed_checks = self.collapsed_checks + 1 if low else 0
        if low and self.collapsed_checks >= cfg.patience:
            self.collapsed_checks = 0
            if self.peak_diversity >= cfg.collapse_ratio:  # it fell: a collapse
                self._raise(Event(step, "mode_collapse", cfg.collapse,
                                  f"sample diversity fell to {diversity_ratio:.2f} of the data's (threshold "
                                  f"{cfg.collapse_ratio}; it had reached {self.peak_diversity:.2f})",
                                  {"diversity_ratio": diversity_ratio, "peak": self.peak_diversity}))
            elif not self.unspread_warned:
                # Never spread out since the state the weights came from (a generator still
                # growing from its initial blob, or one collapsed from the start): a rollback
                # would return to a state no better, so say it once and act no further.
                self.unspread_warned = True
                self._raise(Event(step, "mode_collapse", "warn",
                                  f"sample diversity is {diversity_ratio:.2f} of the data's and has not "
                                  f"reached {cfg.collapse_ratio} yet: the generator has not spread out "
                                  "(no rollback: there is no more diverse state to return to)",
                                  {"diversity_ratio": diversity_ratio, "peak": self.peak_diversity}))

        if coverage is not None and self.coverage.observe(
                coverage, lambda v, peak: v < cfg.collapse_coverage <= peak, cfg.patience,
                hold=cfg.patience):  # reached, then fell; a fall ends once coverage holds for `patience` checks
            self._raise(Event(step, "class_coverage", cfg.coverage,
                              f"the samples cover {coverage:.0%} of the data's modes (threshold "
                              f"{cfg.collapse_coverage:.0%}; they had covered {self.coverage.peak:.0%})",
                              {"coverage": coverage, "peak_coverage": self.coverage.peak}))
        if quality is not None and self.quality.observe(
                quality, lambda v, peak: peak >= cfg.quality_min and v < cfg.quality_drop * peak, cfg.patience,
                recovered=lambda v, peak: v >= 0.5 * peak):  # back to half its best ends a fall
            self._raise(Event(step, "sample_quality", cfg.quality,
                              f"{quality:.0%} of the samples are high quality (within 3 std of a mode), under "
                              f"{cfg.quality_drop} of the {self.quality.peak:.0%} they had reached: the samples "
                              "drift off the modes while still covering them (a critic that no longer tells "
                              "real from fake reads as a converged one)",
                              {"hq": quality, "peak_hq": self.quality.peak}))

    def _recent_grad(self, phase: str) -> float | None:
        """The median gradient norm of `phase` over the last check interval, if it was watched."""
        window = self.windows.get(f"grad/{phase}")
        if not window:
            return None
        recent = sorted(list(window)[-self.cfg.check_every:])
        return math.exp(recent[len(recent) // 2])

    def _check_saturation(self, step: int, d_acc: float) -> None:
        cfg, g_grad, ref = self.cfg, self._recent_grad("g"), self.g_grad_ref
        if d_acc < cfg.saturation_acc:
            self.saturated_checks = 0
            self.g_grad_ref = g_grad if g_grad is not None else ref
            return
        vanished = ref is None or g_grad is not None and g_grad < cfg.saturation_grad * ref
        self.saturated_checks = self.saturated_checks + 1 if vanished else 0
        held = self.saturated_checks * cfg.check_every
        if held < cfg.saturation_steps:
            return
        self.saturated_checks = 0
        if ref is None:  # saturated at every check so far: nothing to compare with or return to
            if not self.saturation_warned:
                self.saturation_warned = True
                self._raise(Event(step, "d_saturation", "warn",
                                  f"the critic has separated real from fake ({d_acc:.3f} accuracy) at every check "
                                  f"since the start ({held} steps): the fakes are far from the data (its scale? "
                                  "model.standardize) or the critic learns much faster than the generator (no "
                                  "rollback: there is no unsaturated state to return to)", {"d_acc": d_acc}))
            return
        g_grad = math.nan if g_grad is None else g_grad
        self._raise(Event(step, "d_saturation", cfg.saturation,
                          f"the critic separates real from fake ({d_acc:.3f} accuracy) and the generator's gradient "
                          f"norm is {g_grad:.2e}, {g_grad / ref:.1%} of its {ref:.2e} while the critic was not "
                          f"saturated, for {held} steps: the generator learns nothing (a non-saturating loss, "
                          "a slower critic or a gradient penalty keeps its gradient)",
                          {"d_acc": d_acc, "g_grad": g_grad, "g_grad_ref": ref}))

    def healthy(self) -> bool:
        """No detector is part-way to a verdict, so the current state may serve as a rollback
        target (a snapshot taken inside a loss spike's patience window would be rolled back to
        and spike again at once)."""
        collapsing = self.collapsed_checks > 0 and self.peak_diversity >= self.cfg.collapse_ratio
        saturating = self.saturated_checks > 0 and self.g_grad_ref is not None and self.cfg.saturation in (
            "rollback", "stop")
        losing_modes = self.coverage.low_checks > 0 and self.cfg.coverage in ("rollback", "stop")
        losing_quality = self.quality.low_checks > 0 and self.cfg.quality in ("rollback", "stop")
        losing_units = self.active.low_checks > 0 and self.cfg.posterior_collapse in ("rollback", "stop")
        return (self.pending is None and not any(self.skips_in_row.values()) and not collapsing
                and not saturating and not losing_modes and not losing_quality and not losing_units
                and not any(self.outliers.values()))

    def on_snapshot(self) -> None:
        self.snapshot_diversity = self.diversity
        for fall in (self.coverage, self.quality, self.active):
            fall.snapshot = fall.value

    # ---- decisions -------------------------------------------------------------------------
    def record(self, event: Event) -> None:
        """Keep an event (for events.jsonl and the summary) without asking for any action."""
        self.events.append(event)
        self.new_events.append(event)

    def _raise(self, event: Event) -> None:
        self.record(event)
        if event.action in ("rollback", "stop") and (
            self.pending is None or ACTION_RANK[event.action] > ACTION_RANK[self.pending.action]
        ):
            self.pending = event

    def take_verdict(self) -> Event | None:
        """The rollback / stop requested since the last call (budget applied), or None."""
        verdict, self.pending = self.pending, None
        if verdict is not None and verdict.action == "rollback" and self.rollbacks >= self.cfg.max_rollbacks:
            verdict.action = "stop"  # the same event, now the last one: no recovery left
            verdict.message = f"rollback budget of {self.cfg.max_rollbacks} spent; last problem: {verdict.message}"
        return verdict

    def on_rollback(self) -> None:
        self.rollbacks += 1
        if self.rollbacks >= self.cfg.lr_drop_from:  # a first, lone spike may just be replayed
            self.lr_scale *= self.cfg.lr_factor
        self.reg_scale *= self.cfg.reg_factor
        self.skips_in_row = {}
        self.saturated_checks = 0
        self.collapsed_checks = 0
        # the restored weights are as diverse as they were at the snapshot, not at the peak since
        self.diversity = self.snapshot_diversity
        self.peak_diversity = self.snapshot_diversity or 0.0
        for fall in (self.coverage, self.quality, self.active):
            fall.restore()
        for key in self.outliers:
            self.outliers[key] = 0

    def drain(self) -> list[Event]:
        out, self.new_events = self.new_events, []
        return out

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.events:
            counts[e.detector] = counts.get(e.detector, 0) + 1
        return counts

    # ---- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"lr_scale": self.lr_scale, "reg_scale": self.reg_scale, "rollbacks": self.rollbacks,
                "skips_in_row": self.skips_in_row, "overflows": self.overflows, "updates": self.updates,
                "saturated_checks": self.saturated_checks, "g_grad_ref": self.g_grad_ref,
                "saturation_warned": self.saturation_warned,
                "collapsed_checks": self.collapsed_checks, "diversity": self.diversity,
                "peak_diversity": self.peak_diversity, "snapshot_diversity": self.snapshot_diversity,
                "unspread_warned": self.unspread_warned, "coverage_fall": asdict(self.coverage),
                "quality_fall": asdict(self.quality), "active_fall": asdict(self.active),
                "windows": {k: list(v) for k, v in self.windows.items()}, "outliers": dict(self.outliers),
                "events": [e.to_json() for e in self.events]}

    def load_state_dict(self, state: dict) -> None:
        self.lr_scale, self.rollbacks = float(state["lr_scale"]), int(state["rollbacks"])
        # checkpoints from before these were kept: R1 / GP raised once a rollback, no G reference
        self.reg_scale = float(state.get("reg_scale", self.cfg.reg_factor ** self.rollbacks))
        self.g_grad_ref = state.get("g_grad_ref")
        self.saturation_warned = bool(state.get("saturation_warned", False))
        self.overflows = int(state["overflows"])
        # older checkpoints kept one count for all phases, and no update counts
        skips = state["skips_in_row"]
        self.skips_in_row = dict(skips) if isinstance(skips, dict) else {}
        self.updates = dict(state.get("updates", {}))
        self.counts_from_start = "updates" in state
        self.saturated_checks = int(state["saturated_checks"])
        self.collapsed_checks = int(state["collapsed_checks"])
        # checkpoints written before the diversity peak was kept: treat the run as spread out
        self.diversity = state.get("diversity")
        self.peak_diversity = float(state.get("peak_diversity", 1.0))
        self.snapshot_diversity = state.get("snapshot_diversity")
        self.unspread_warned = bool(state.get("unspread_warned", False))
        if "coverage_fall" in state:
            self.coverage = Fall(**state["coverage_fall"])
        else:  # checkpoints written before the quality check kept coverage in flat keys
            self.coverage = Fall(state.get("coverage"), float(state.get("peak_coverage", 0.0)),
                                 state.get("snapshot_coverage"), int(state.get("uncovered_checks", 0)),
                                 bool(state.get("coverage_reported", False)))
        self.quality = Fall(**state.get("quality_fall", {}))
        self.active = Fall(**state.get("active_fall", {}))
        self.windows = {k: deque(v, maxlen=self.cfg.window) for k, v in state["windows"].items()}
        self.outliers = dict(state["outliers"])
        self.events = [Event(**e) for e in state["events"]]
