"""Any neurogym environment as a seeded neurorate task (the reference for the fast 2AF and DMS generators).

``make_task("neurogym:<env id>", env_kwargs={...})`` wraps a neurogym ``TrialEnv`` with a discrete action space.
Batch ``i`` holds one trial per column, built trial by trial through neurogym itself::

    env = neurogym.make(env_id, **env_kwargs)          # a fresh environment for every batch
    for column b:  env.seed(s_b); env.new_trial()      # s_b: the b-th integer drawn from SeedSequence(seed, i)
                   x[:L_b, b] = env.ob;  target[:L_b, b] = env.gt

so batch ``i`` is a pure function of (env id, env kwargs, seed, i), whatever was generated before. This is
the point of the adapter: ``neurogym.Dataset``'s constructor seeds its environments with None and fills its
cache of trials before the user can call ``Dataset.seed``, so its first batches differ from run to run even
after ``dataset.seed(0)``; it also streams concatenated trials whose boundaries depend on the history.

Trials shorter than ``n_steps`` are padded with zeros (input 0, label 0, mask 0); longer ones are cut at
``n_steps``. ``n_steps`` defaults to the trial length for fixed timing, or to the longest of ``n_probe`` trials
drawn with the task's seed for random timing. Loss "ce": targets are neurogym's integer labels; the mask is 1
on every trial step (or only where the label is > 0 with ``fixate=False``). ``dt`` is the environment's (ms);
``tau`` defaults to 100 ms as in neurogym-based code, giving ``alpha = 1`` at the default dt.

This is a reference implementation, slow by design (python loop over trials, a new environment per batch:
about 3 ms per batch of 16 for PerceptualDecisionMaking-v0, 50 times the fast generator); use
``make_task("2af")`` / ``make_task("dms")`` to train.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from typing import Any

import numpy as np

from neurorate.errors import NeurorateError
from neurorate.tasks.base import Task


def _neurogym():
    with warnings.catch_warnings():  # neurogym's registration warns about gymnasium metadata on import
        warnings.simplefilter("ignore")
        import neurogym

    return neurogym


def _jsonable(value):
    """The value itself where JSON can hold it (timing dicts of numbers ...), else its repr."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


@dataclasses.dataclass(repr=False)
class NeurogymTask(Task):
    """A neurogym environment as a seeded, trial-aligned task.

    Parameters
    ----------
    env_id : the neurogym environment id, e.g. "PerceptualDecisionMaking-v0".
    batch_size : trials (columns) per batch.
    seed : seed of the batch stream.
    tau : network time constant in ms (the step ``dt`` is the environment's).
    dt : environment step in ms; None keeps the environment's default. Same as ``env_kwargs={"dt": ...}``.
    env_kwargs : keyword arguments of the environment's constructor (timing, sigma, ...).
    n_steps : steps per batch (trials padded or cut to it); None: see the module docstring.
    n_probe : trials drawn to find the longest trial when the timing is random.
    fixate : mask every trial step (True) or only the steps whose label is > 0 (False).
    """

    env_id: str = ""
    batch_size: int = 16
    seed: int = 0
    tau: float = 100.0
    dt: float | None = None
    env_kwargs: dict = dataclasses.field(default_factory=dict)
    n_steps: int | None = None
    n_probe: int = 200
    fixate: bool = True

    name = "neurogym"
    loss_kind = "ce"
    time_unit = "ms"

    def __post_init__(self):
        if not isinstance(self.env_id, str) or not self.env_id:
            raise NeurorateError(
                "neurogym: give the environment id, e.g. make_task('neurogym:DelayComparison-v0')"
            )
        if not isinstance(self.env_kwargs, dict):
            raise NeurorateError(f"neurogym: env_kwargs must be a dict, got {type(self.env_kwargs).__name__}")
        self.env_kwargs = dict(self.env_kwargs)
        if self.dt is not None:
            self.env_kwargs["dt"] = self.dt
        env = self._make_env()
        import gymnasium

        if not isinstance(env.action_space, gymnasium.spaces.Discrete):
            raise NeurorateError(
                f"neurogym: {self.env_id} has a {type(env.action_space).__name__} action space; "
                "only discrete actions (loss 'ce') are supported"
            )
        if len(env.observation_space.shape or ()) != 1:
            raise NeurorateError(
                f"neurogym: {self.env_id} has observations of shape {env.observation_space.shape}; "
                "only flat (vector) observations are supported"
            )
        self.n_in, self.n_out = int(env.observation_space.shape[0]), int(env.action_space.n)
        Task.__init__(self, self.batch_size, self.seed, float(env.dt), self.tau)
        self.dt = float(env.dt)
        if self.n_steps is None:
            self.n_steps = self._longest_trial(env)
        if isinstance(self.n_steps, bool) or int(self.n_steps) != self.n_steps or self.n_steps < 1:
            raise NeurorateError(f"neurogym: n_steps must be a positive integer, got {self.n_steps!r}")
        self.n_steps = int(self.n_steps)

    def _make_env(self):
        ngym = _neurogym()
        import gymnasium

        try:
            with warnings.catch_warnings():  # gymnasium warns that neurogym's metadata lacks render modes
                warnings.simplefilter("ignore")
                env = ngym.make(self.env_id, **self.env_kwargs)
        except (gymnasium.error.Error, TypeError, ValueError, KeyError) as exc:  # unknown id, bad kwargs
            raise NeurorateError(
                f"neurogym: cannot make {self.env_id!r} with {self.env_kwargs}: {exc}"
            ) from None
        env = env.unwrapped
        if not hasattr(env, "new_trial"):
            raise NeurorateError(f"neurogym: {self.env_id} is not a trial-based neurogym environment")
        return env

    def _longest_trial(self, env) -> int:
        """Trial length (fixed timing) or the longest of ``n_probe`` trials; checks that env.seed fixes a trial."""
        fixed = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in env.timing.values())
        first = []
        for _ in range(2):
            env.seed(self.seed)
            first.append(self._new_trial(env)[:2])
        if not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(*first)):
            raise NeurorateError(
                f"neurogym: {self.env_id} draws trials that env.seed() does not fix; it cannot be "
                "wrapped reproducibly"
            )
        lengths = [first[1][0].shape[0]]
        lengths += [self._new_trial(env)[0].shape[0] for _ in range(0 if fixed else self.n_probe - 1)]
        return int(max(lengths))

    @staticmethod
    def _new_trial(env):
        info = env.new_trial()
        if getattr(env, "gt", None) is None:
            raise NeurorateError(f"neurogym: {type(env).__name__} defines no ground truth (env.gt)")
        return np.asarray(env.ob), np.asarray(env.gt), info

    def trial_seeds(self, i: int) -> np.ndarray:
        """The per-trial neurogym seeds of batch ``i`` (one per column)."""
        return self.rng(i).integers(0, 2**31 - 1, self.batch_size)

    def trials(self, i: int) -> list[dict]:
        """Neurogym's trial dicts (ground truth, coherence, ...) of the columns of batch ``i``."""
        return self._build(self.trial_seeds(i))[3]

    def _generate(self, rng: np.random.Generator, batch_size: int):
        # x (n_steps, B, n_in) float32, labels (n_steps, B) int64, mask (n_steps, B) float32
        return self._build(rng.integers(0, 2**31 - 1, batch_size))[:3]

    def _build(self, seeds: np.ndarray):
        env = self._make_env()
        b, t = len(seeds), self.n_steps
        x = np.zeros((t, b, self.n_in), dtype=np.float32)
        target = np.zeros((t, b), dtype=np.int64)
        mask = np.zeros((t, b), dtype=np.float32)
        infos = []
        for col, s in enumerate(seeds):
            env.seed(int(s))
            ob, gt, info = self._new_trial(env)
            n = min(ob.shape[0], t)
            x[:n, col] = ob[:n]
            target[:n, col] = gt[:n]
            mask[:n, col] = 1.0 if self.fixate else (gt[:n] > 0)
            infos.append(dict(info) if info is not None else {})
        return x, target, mask, infos

    def _extra_config(self) -> dict[str, Any]:
        out = super()._extra_config()
        out["env_kwargs"] = {k: _jsonable(v) for k, v in self.env_kwargs.items()}
        return out
