"""Lyapunov spectra of driven rate RNNs by the QR (Benettin) method, batched over networks and input streams.

The tangent map of one step (docs/theory.md §4.1; inputs are not perturbed)::

    A   D_t = (1-alpha) I + alpha W diag(f'(a_{t-1}))
    B   D_t = diag(f'(u_t)) ((1-alpha) I + alpha W)
    C   D_t = (1-alpha) I + alpha diag(f'(u_t)) W

is applied analytically to an orthonormal frame ``Q (M, S, N, k)`` (M networks, S input streams; the map of
:func:`neurorate.model.dynamics.tangent_step`, see :func:`tangent`); a dense Jacobian is never formed.
Every ``t_ons`` steps ``Z = D_t ... Q`` is re-orthonormalised, ``Q R = qr(Z)`` with the signs fixed so that
``diag(R) > 0``, and after ``warmup`` steps ``log R_ii`` is accumulated. The exponents are the accumulated sums
divided by the number of accumulated *steps* (natural log, per step), averaged over the S streams and sorted
descending.

Units: ``"step"`` (as computed), ``"tau"`` (``lambda / alpha``) and ``"second"`` (``lambda / dt``, dt in
seconds from the spec or the task). ReLU units with ``f' = 0`` make ``D_t`` rank-deficient; the log of
``R_ii`` is clamped at ``log(1e-30) = -69.08`` per re-orthonormalisation, so an exponent that is really
``-inf`` comes out as a large negative number instead of NaN.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from neurorate.errors import NeurorateError, as_int
from neurorate.model import dynamics
from neurorate.model.spec import NetworkSpec

UNITS = ("step", "tau", "second")
LOG_FLOOR = 1e-30  # R_ii below this (rank-deficient ReLU Jacobians) count as log(1e-30)


@dataclasses.dataclass
class LyapunovSpectrum:
    """A Lyapunov spectrum with its spread over input streams.

    Attributes
    ----------
    mean : (k,) for one network or (M, k) for an ensemble; descending, natural log, in ``unit``.
    std : the standard deviation over the S input streams (same shape; 0 when S = 1).
    per_stream : (M, S, k) the exponents of each network and stream (in ``unit``, unsorted).
    unit : "step", "tau" or "second" (per step, per tau, per second).
    k : number of exponents.
    steps : number of steps the exponents are averaged over (after warm-up).
    warmup : steps run before accumulation started.
    n_streams : number of input streams S.
    """

    mean: np.ndarray
    std: np.ndarray
    per_stream: np.ndarray
    unit: str
    k: int
    steps: int
    warmup: int
    n_streams: int

    @property
    def lambda_max(self) -> float | np.ndarray:
        """The largest exponent: a float for one network, ``(M,)`` for an ensemble."""
        top = self.mean[..., 0]
        return float(top) if np.ndim(top) == 0 else top

    def to_dict(self) -> dict:
        """JSON-able dict."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "unit": self.unit, "k": self.k,
                "steps": self.steps, "warmup": self.warmup, "n_streams": self.n_streams,
                "lambda_max": np.asarray(self.lambda_max).tolist()}


# ---------------------------------------------------------------------------------------------- helpers
def as_spec_list(spec_or_specs) -> tuple[list[NetworkSpec], bool]:
    """``(specs, single)``: a list of specs sharing N, n_in, form and activation; ``single`` if one was given."""
    single = isinstance(spec_or_specs, NetworkSpec)
    try:
        specs = [spec_or_specs] if single else list(spec_or_specs)
    except TypeError:  # None, a number: not a list of networks
        specs = []
    if not specs or not all(isinstance(s, NetworkSpec) for s in specs):
        raise NeurorateError(f"give a NetworkSpec or a non-empty list of NetworkSpecs, got "
                             f"{type(spec_or_specs).__name__}")
    first = specs[0]
    for s in specs[1:]:
        if (s.n_hidden, s.n_in, s.form, s.activation) != (first.n_hidden, first.n_in, first.form, first.activation):
            raise NeurorateError("an ensemble must share N, n_in, form and activation (alpha may differ); "
                                 "split it into groups")
    return specs, single


def stack_specs(specs: Sequence[NetworkSpec], device="cpu", dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Ensemble tensors ``w_rec (M, N, N)``, ``w_in (M, N, n_in)``, ``b (M, 1, N)``, ``alpha (M,)``."""
    t = lambda arrs: torch.as_tensor(np.stack(arrs), device=device, dtype=dtype)
    return {"w_rec": t([s.w_rec for s in specs]), "w_in": t([s.w_in for s in specs]),
            "b": t([s.b for s in specs]).unsqueeze(1), "alpha": t([s.alpha for s in specs])}


def orthonormal_frame(n: int, k: int, seed: int, device="cpu", dtype=torch.float64) -> torch.Tensor:
    """An ``(N, k)`` orthonormal frame: QR of a seeded Gaussian matrix."""
    g = torch.Generator().manual_seed(int(seed))
    q, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    return q.to(device=device, dtype=dtype)


def orthonormalise(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q, log R_ii)`` of ``z (..., N, k)`` with ``diag(R) > 0``; log clamped at ``log(LOG_FLOOR)``."""
    if z.shape[-1] == 1:  # k = 1: renormalising one vector is all the QR does
        norm = torch.linalg.vector_norm(z, dim=-2, keepdim=True)
        return z / norm.clamp_min(LOG_FLOOR), torch.log(norm.squeeze(-2).clamp_min(LOG_FLOOR))
    q, r = torch.linalg.qr(z, mode="reduced")
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    sign = torch.where(d < 0, -1.0, 1.0).to(z.dtype)
    return q * sign.unsqueeze(-2), torch.log(d.abs().clamp_min(LOG_FLOOR))


def tangent(q: torch.Tensor, w_rec: torch.Tensor, alpha: torch.Tensor, form: str, fp: torch.Tensor) -> torch.Tensor:
    """``D_t Q`` for ``q (M, S, N, k)``, ``w_rec (M, N, N)``, ``alpha (M, 1, 1, 1)``, ``fp (M, S, N)``.

    The same map as :func:`neurorate.model.dynamics.tangent_step` (``fp`` is ``f'(a_{t-1})`` in form A and
    ``f'(u_t)`` in B, C), written with an einsum over the stream axis: a broadcast ``matmul`` of
    ``(M, 1, N, N)`` with ``(M, S, N, k)`` copies W S times and was 4x slower on CPU.
    """
    if form == "A":
        return (1 - alpha) * q + alpha * torch.einsum("mij,msjk->msik", w_rec, fp.unsqueeze(-1) * q)
    wq = torch.einsum("mij,msjk->msik", w_rec, q)
    if form == "B":
        return fp.unsqueeze(-1) * ((1 - alpha) * q + alpha * wq)
    return (1 - alpha) * q + alpha * fp.unsqueeze(-1) * wq


_DEAD_LOG = math.log(1e-20)


def benettin(fprimes: Iterable[torch.Tensor], w_rec: torch.Tensor, alpha: torch.Tensor, form: str,
             q0: torch.Tensor, n_total: int, warmup: int, t_ons: int = 1,
             detach_q: bool = False, detach_warmup: bool = False) -> tuple[torch.Tensor, int]:
    """The QR recursion: ``(sum of log R_ii over accumulated windows (M, S, k), number of steps accumulated)``.

    Parameters
    ----------
    fprimes : yields, for t = 1..T, the ``f'`` that enters ``D_t`` (``f'(a_{t-1})`` in form A, ``f'(u_t)``
        in forms B and C), each ``(M, S, N)``.
    w_rec : (M, N, N). alpha : (M,) tensor. q0 : (M, S, N, k) orthonormal.
    n_total, warmup : T and the steps before accumulation starts. A re-orthonormalisation is forced at the
        end of the warm-up and at the last step, so windows never straddle the boundary.
    detach_q : cut the gradient through ``Q_{t-1}`` before each product (flossing mode ``onestep``).
    detach_warmup : no gradient through the warm-up's frame (gradients flow only through accumulated steps).
    """
    a4 = alpha.reshape(-1, 1, 1, 1)
    z = q0.detach() if detach_q else q0
    log_sum = torch.zeros(q0.shape[:-2] + q0.shape[-1:], dtype=q0.dtype, device=q0.device)
    count = since = window_start = 0
    for t, fp in enumerate(fprimes):
        z = tangent(z, w_rec, a4, form, fp)
        since += 1
        if since == t_ons or t + 1 == warmup or t + 1 == n_total:
            q, log_r = orthonormalise(z)
            if window_start >= warmup:
                log_sum = log_sum + log_r
                count += since
            in_warmup = window_start < warmup
            if in_warmup:
                # a frame annihilated during the warm-up (ReLU at alpha = 1: the first Jacobian W diag(f'(0)) is
                # exactly 0) restarts from the initial frame instead of carrying zeros into the measurement
                dead = (log_r < _DEAD_LOG).any(-1)[..., None, None]
                q = torch.where(dead, q0.detach(), q)
            # detach_warmup: the warm-up only converges the frame, so no gradient flows through it (the QR
            # backward of a rank-deficient warm-up frame is NaN); the local flossing modes use it
            z = q.detach() if (detach_q or (detach_warmup and in_warmup)) else q
            window_start, since = t + 1, 0
    return log_sum, count


def simulate_fprimes(ens: dict[str, torch.Tensor], form: str, activation: str, x: torch.Tensor,
                     state0: torch.Tensor, detach_pre: bool = False, track_grad: bool = True
                     ) -> Iterator[torch.Tensor]:
    """Run M networks on inputs ``x (T, S, n_in)`` and yield the ``f'`` entering each ``D_t`` (see :func:`benettin`).

    ``detach_pre`` is the e-prop detach of the presynaptic rate; ``track_grad=False`` runs the state
    without autograd (the trajectory is then a constant for any gradient).
    """
    f, fprime = dynamics.activation(activation)
    a3 = ens["alpha"].reshape(-1, 1, 1)
    w_in_t = ens["w_in"].transpose(-1, -2)
    state = state0
    for t in range(x.shape[0]):
        with torch.set_grad_enabled(track_grad and torch.is_grad_enabled()):
            drive_t = torch.matmul(x[t], w_in_t) + ens["b"]
            prev = state
            state, pre = dynamics.step(state, drive_t, ens["w_rec"], a3, form, f, detach_pre=detach_pre)
            fp = fprime(prev if form == "A" else pre)
        yield fp


def resolve_inputs(task_or_inputs, n_streams: int, steps: int | None, warmup: int | None,
                   n_trials_default: int = 8) -> tuple[np.ndarray, int, float | None]:
    """``(x (T, S, n_in), warmup, dt_seconds)`` from a Task or an input array.

    Task: ``warmup`` defaults to one trial plus 10% of ``steps``; ``steps`` to ``n_trials_default`` trials
    minus the warm-up. Array ``(T, S, n_in)`` or ``(T, n_in)``: ``warmup`` defaults to 10% of T (or
    ``T - steps``); only ``warmup + steps`` steps are used.
    """
    for name, v in (("steps", steps), ("warmup", warmup)):
        if v is not None:
            as_int(v, name, minimum=1 if name == "steps" else 0)
    if task_or_inputs is None or isinstance(task_or_inputs, (str, bytes)):
        raise NeurorateError(f"give a Task (neurorate.make_task) or an input array (T, S, n_in), got "
                             f"{task_or_inputs!r:.60}")
    if hasattr(task_or_inputs, "stream"):
        task = task_or_inputs
        as_int(n_streams, "n_streams", minimum=1)
        trial = int(task.n_steps)
        if steps is None:
            total = n_trials_default * trial
            warmup = trial + int(0.1 * (total - trial)) if warmup is None else int(warmup)
            steps = total - warmup
        elif warmup is None:
            warmup = trial + int(0.1 * steps)
        total = int(warmup) + int(steps)
        x = task.stream(math.ceil(total / trial), batch_size=int(n_streams))[:total]
        return np.asarray(x, dtype=np.float64), int(warmup), task.dt_seconds
    x = np.asarray(task_or_inputs, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, None, :]
    if x.ndim != 3:
        raise NeurorateError(f"inputs must be an array (T, S, n_in) of S streams, got shape {x.shape}")
    n_t = x.shape[0]
    if warmup is None:
        warmup = n_t - steps if steps is not None else int(0.1 * n_t)
    steps = n_t - warmup if steps is None else steps
    if steps < 1 or warmup < 0 or warmup + steps > n_t:
        raise NeurorateError(f"warmup ({warmup}) + steps ({steps}) must fit in the {n_t} input steps "
                             "and leave at least one step to accumulate")
    return x[: warmup + steps], int(warmup), None


def unit_scale(specs: Sequence[NetworkSpec], units: str, dt_seconds: float | None) -> np.ndarray:
    """Per-network divisor that turns per-step exponents into ``units``: 1, alpha or dt (seconds)."""
    if units == "step":
        return np.ones(len(specs))
    if units == "tau":
        return np.array([s.alpha for s in specs])
    if units == "second":
        dts = [s.dt if s.dt is not None else dt_seconds for s in specs]
        if any(d is None for d in dts):
            raise NeurorateError("units='second' needs the time step in seconds: set spec.dt, use a task whose "
                                 "time is in seconds, or use units='step' or 'tau'")
        return np.array(dts, dtype=np.float64)
    raise NeurorateError(f"unknown units {units!r}; choose one of {', '.join(UNITS)}")


def _initial_state(initial_state, m: int, s: int, n: int, device, dtype) -> torch.Tensor:
    if initial_state is None:
        return torch.zeros(m, s, n, device=device, dtype=dtype)
    st = torch.as_tensor(np.asarray(initial_state, dtype=np.float64), device=device, dtype=dtype)
    try:
        return st.expand(m, s, n).clone()
    except RuntimeError:
        raise NeurorateError(f"initial_state of shape {tuple(st.shape)} does not broadcast to "
                             f"(M={m}, S={s}, N={n})") from None


def _check(k, n: int, t_ons) -> int:
    k = n if k is None else k
    k = as_int(k, "k", minimum=1)
    if k > n:
        raise NeurorateError(f"k must be an integer in [1, N={n}], got {k}")
    as_int(t_ons, "t_ons (re-orthonormalisation interval)", minimum=1)
    return k


def _device(device):
    """``device`` ("cpu", "auto", "cuda", "cuda:K" or a ``torch.device``) as a ``torch.device``; one that this
    machine does not have is a one-line error (:func:`neurorate.backends.torch.resolve_device`)."""
    from neurorate.backends.torch import resolve_device

    return resolve_device(device)


def _finish(log_sum: torch.Tensor, count: int, scale: np.ndarray, units: str, k: int, warmup: int,
            single: bool, return_stats: bool):
    per_step = log_sum.detach().cpu().numpy().astype(np.float64) / count
    mean = per_step.mean(axis=1)
    std = per_step.std(axis=1, ddof=1) if per_step.shape[1] > 1 else np.zeros_like(mean)
    # convert units last, so that a spectrum in tau or seconds is exactly the per-step one divided
    per_stream, mean, std = per_step / scale[:, None, None], mean / scale[:, None], std / scale[:, None]
    order = np.argsort(-mean, axis=1, kind="stable")
    mean, std = np.take_along_axis(mean, order, 1), np.take_along_axis(std, order, 1)
    if single:
        mean, std = mean[0], std[0]
    if return_stats:
        return LyapunovSpectrum(mean=mean, std=std, per_stream=per_stream, unit=units, k=k, steps=count,
                                warmup=warmup, n_streams=per_stream.shape[1])
    return mean


# ---------------------------------------------------------------------------------------------- public API
def lyapunov_spectrum(spec_or_specs, task_or_inputs, k: int | None = None, steps: int | None = None,
                      warmup: int | None = None, units: str = "step", n_streams: int = 16, seed: int = 0,
                      t_ons: int = 1, return_stats: bool = False, device="cpu", dtype=torch.float64,
                      initial_state=None, progress=None):
    """Top-``k`` Lyapunov exponents of one network or an ensemble, driven by a task's inputs.

    Parameters
    ----------
    spec_or_specs : a NetworkSpec, or a list of them sharing N, n_in, form and activation (one program).
    task_or_inputs : a Task (``task.stream`` gives ``n_streams`` streams of concatenated trials) or an
        array ``(T, S, n_in)`` of S input streams (``(T, n_in)`` for one).
    k : number of exponents (default N, the full spectrum).
    steps, warmup : steps accumulated and steps run before (see :func:`resolve_inputs` for defaults;
        Task: 8 trials in all, warm-up one trial plus 10% of the rest).
    units : "step", "tau" (``lambda/alpha``) or "second" (``lambda/dt``, dt from spec.dt or the task).
    n_streams : input streams S drawn from a Task (ignored for arrays).
    seed : seeds the initial orthonormal frame.
    t_ons : re-orthonormalisation interval in steps.
    return_stats : return a :class:`LyapunovSpectrum` (mean, std over streams, unit, k, steps).
    initial_state : state at t = 0, broadcastable to ``(M, S, N)`` (default 0).
    progress : None (silent), or ``progress(total, done)`` called as the steps go (``total`` = warm-up plus
        accumulated steps); it changes no number.

    Returns
    -------
    ``(k,)`` for one spec, ``(M, k)`` for a list: mean over streams, descending, natural log, in ``units``.
    """
    specs, single = as_spec_list(spec_or_specs)
    n, form = specs[0].n_hidden, specs[0].form
    k = _check(k, n, t_ons)
    device = _device(device)
    x_np, warmup, dt_task = resolve_inputs(task_or_inputs, n_streams, steps, warmup)
    scale = unit_scale(specs, units, dt_task)
    if x_np.shape[-1] != specs[0].n_in:
        raise NeurorateError(f"inputs have {x_np.shape[-1]} channels but the network has n_in={specs[0].n_in}")
    with torch.no_grad():
        ens = stack_specs(specs, device, dtype)
        x = torch.as_tensor(x_np, device=device, dtype=dtype)
        m, s = len(specs), x.shape[1]
        q0 = orthonormal_frame(n, k, seed, device, dtype).expand(m, s, n, k)
        state0 = _initial_state(initial_state, m, s, n, device, dtype)
        fps = simulate_fprimes(ens, form, specs[0].activation, x, state0)
        if progress is not None:
            fps = _reporting(fps, int(x.shape[0]), progress)
        log_sum, count = benettin(fps, ens["w_rec"], ens["alpha"], form, q0, x.shape[0], warmup, t_ons)
    return _finish(log_sum, count, scale, units, k, warmup, single, return_stats)


def _reporting(items: Iterable, total: int, progress) -> Iterator:
    """``items`` unchanged, calling ``progress(total, done)`` about 100 times along the way and at the end."""
    every = max(1, total // 100)
    done = 0
    for item in items:
        yield item
        done += 1
        if done % every == 0 or done == total:
            progress(total, done)


def max_lyapunov(spec_or_specs, task_or_inputs, steps: int | None = None, warmup: int | None = None,
                 units: str = "step", n_streams: int = 16, seed: int = 0, t_ons: int = 1,
                 return_stats: bool = False, device="cpu", dtype=torch.float64, initial_state=None):
    """The largest Lyapunov exponent (k = 1: one renormalised vector); float, or ``(M,)`` for a list.

    Same calling convention as :func:`lyapunov_spectrum`; ``return_stats=True`` gives a
    :class:`LyapunovSpectrum` with ``k = 1``.
    """
    out = lyapunov_spectrum(spec_or_specs, task_or_inputs, k=1, steps=steps, warmup=warmup, units=units,
                            n_streams=n_streams, seed=seed, t_ons=t_ons, return_stats=return_stats,
                            device=device, dtype=dtype, initial_state=initial_state)
    if return_stats:
        return out
    return float(out[0]) if out.ndim == 1 else out[:, 0]


def lyapunov_from_trajectory(spec_or_specs, preacts_or_states, k: int | None = None, warmup: int | None = None,
                             units: str = "step", seed: int = 0, t_ons: int = 1, return_stats: bool = False,
                             dt_seconds: float | None = None, device="cpu", dtype=torch.float64):
    """Lyapunov exponents from a recorded trajectory plus the spec (for backends that cannot run torch).

    Row t of the trajectory must be the quantity whose ``f'`` enters ``D_t``:

    * form A: the state *before* step t, ``a_{t-1}``; i.e. the states ``a_0 .. a_{T-1}`` (a backend that
      records ``a_1 .. a_T`` prepends its initial state and drops the last row);
    * forms B and C: the pre-activation of step t, ``u_t`` (``u_1 .. u_T``).

    Parameters
    ----------
    spec_or_specs : a NetworkSpec or a list (as in :func:`lyapunov_spectrum`).
    preacts_or_states : ``(T, S, N)`` or ``(T, N)`` for one spec; ``(M, T, S, N)`` for a list.
    warmup : steps not accumulated (default 10% of T).
    dt_seconds : the step in seconds for ``units="second"`` when the specs have no ``dt``.
    Other parameters and the return value are as in :func:`lyapunov_spectrum`.
    """
    specs, single = as_spec_list(spec_or_specs)
    n, form = specs[0].n_hidden, specs[0].form
    k = _check(k, n, t_ons)
    device = _device(device)
    traj = np.asarray(preacts_or_states, dtype=np.float64)
    if traj.ndim == 2:
        traj = traj[:, None, :]
    if traj.ndim == 3:
        traj = np.broadcast_to(traj, (len(specs),) + traj.shape)
    if traj.ndim != 4 or traj.shape[0] != len(specs) or traj.shape[-1] != n:
        raise NeurorateError(f"trajectory must be (T, S, N={n}) or (M={len(specs)}, T, S, N), got {traj.shape}")
    n_t = traj.shape[1]
    warmup = int(0.1 * n_t) if warmup is None else int(warmup)
    if not (0 <= warmup < n_t):
        raise NeurorateError(f"warmup must be in [0, T={n_t}), got {warmup}")
    scale = unit_scale(specs, units, dt_seconds)
    _, fprime = dynamics.activation(specs[0].activation)
    with torch.no_grad():
        ens = stack_specs(specs, device, dtype)
        tr = torch.as_tensor(np.array(traj), device=device, dtype=dtype)
        q0 = orthonormal_frame(n, k, seed, device, dtype).expand(len(specs), tr.shape[2], n, k)
        fps = (fprime(tr[:, t]) for t in range(n_t))
        log_sum, count = benettin(fps, ens["w_rec"], ens["alpha"], form, q0, n_t, warmup, t_ons)
    return _finish(log_sum, count, scale, units, k, warmup, single, return_stats)
