"""The compiled CPU path: one whole training iteration of a form-A ensemble in one numba call (docs/api.md).

For each network of the ensemble (``prange`` over networks, each network's state local and small) the kernel
runs the forward pass, the rule's gradient, the loss, the accuracy and the optimizer step:

* ``eprop`` and ``eprop_random``: the factorised form-A e-prop of
  :func:`neurorate.learning.eprop.factorized_gradients` (traces ``rbar, xbar, bbar``; ``dW += (L_t psi_t)^T rbar_t``);
* ``rflo``: in form A at full precision the same computation with the random feedback ``B`` (the forward traces of
  :func:`neurorate.learning.eprop.online_gradients` factorise the same way);
* ``bptt``: the hand-written backward pass of :func:`neurorate.learning.bptt.bptt_form_a_gradients`;
* ``snap1``: the same backward pass with ``W^T delta`` replaced by its diagonal ``W_kk delta_k`` (SnAp-1 in reverse
  time, :func:`neurorate.learning.estimators.snap1.snap1_form_a_gradients`);
* losses and accuracy as :mod:`neurorate.model.losses` (``mse`` and ``ce``, the normaliser of the whole batch);
* Adam and SGD as :class:`neurorate.optim.EnsembleOptimizer`, whose moments it updates in place, with its freeze:
  a network whose loss is not finite is made inactive and from then on gets no update (its moments decay).

Speed (docs/benchmarks.md, "Compiled CPU path"): every matrix product of a step (the recurrent drive, BPTT's
``W^T delta``, the outer products of the gradients) is :func:`_outer_acc`, which updates two output rows per pass
with eight products summed as a tree; those sums alone are compiled with the fast-math flags :data:`REASSOC`
(reassociation and fused multiply-adds), so that LLVM keeps the partial sums in vector registers. Everything
element-wise runs over contiguous rows so that it vectorises without fast-math (the tanh in plain arithmetic,
:func:`_tanh`); reductions that must keep their order (over outputs, over the batch) do so. Reassociation changes
rounding at the 1e-16 relative level only: float64 still equals the torch path to 1e-12 after 30 Adam iterations,
and a seeded run is bit-reproducible on the same machine (the order of every sum is fixed at compile time and does
not depend on the thread count).

The torch implementations stay the reference: ``tests/unit/test_compiled.py`` checks the two against each other
(float64 to 1e-12 after 30 Adam iterations for every rule, activation and loss). :class:`CompiledStep` is what
:class:`neurorate.backends.torch.TorchBackend` calls when :func:`applies` (CPU, form A, no profile, one of
:data:`KERNEL_MODES`, tanh or relu); ``TorchBackend(compiled=False)``, ``backend_options={"compiled": False}`` or
the environment variable ``NEURORATE_COMPILED=0`` keep the torch path. The kernel's threads run across networks
(:func:`kernel_threads`), while torch's own intra-op threads stay at 1.
"""

from __future__ import annotations

import math
import os

import numpy as np

try:  # numba is a dependency; without it the torch path runs
    import numba
    from numba import njit, prange
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

KERNEL_MODES = {
    ("presynaptic rates", "symmetric", False, ""): 0,  # e-prop with W_out^T
    ("presynaptic rates", "random", False, ""): 1,  # e-prop with the random B
    ("presynaptic rates", "random", True, ""): 1,  # RFLO: in form A at full precision the computation of mode 1
    ("nothing", "symmetric", False, ""): 2,  # BPTT
    ("other units' rates", "symmetric", True, "neurorate.learning.estimators.snap1:SnAp1"): 3,  # SnAp-1
}
"""The kernel's modes by a rule's properties ``(detach, feedback, online, estimator)``, never by its name: 0 e-prop
with ``W_out^T``, 1 e-prop with the random ``B``, 2 BPTT, 3 SnAp-1 (the backward pass of BPTT keeping only the
self-connections). Any rule value with these properties (a plugin's, a ``dataclasses.replace`` of a built-in under
another name) takes the kernel; any other rule runs on the torch path (``eprop_online`` there computes from its
forward traces, which is its point; ``rtrl``, ``uoro`` and ``kf_rtrl`` from their estimators)."""


def kernel_mode(rule) -> int | None:
    """The kernel's mode for ``rule`` (a name or a :class:`~neurorate.learning.registry.Rule`) from its properties
    (:data:`KERNEL_MODES`), None when the kernel does not compute it."""
    from neurorate.learning.registry import get_rule

    r = get_rule(rule)
    return KERNEL_MODES.get((r.detach, r.feedback, bool(r.online), r.estimator))


def _compiled_rules() -> dict[str, int]:
    from neurorate.learning.registry import BUILTIN_RULES

    return {r.name: kernel_mode(r) for r in BUILTIN_RULES if kernel_mode(r) is not None}


COMPILED_RULES = _compiled_rules()
"""The built-in rules the kernel computes, name -> mode (:func:`kernel_mode`; for listings and docs)."""
ACTIVATIONS = ("tanh", "relu")
"""Activations the kernel implements."""
LOSS_KINDS = ("mse", "ce")
"""Losses the kernel implements."""
REASSOC = {"reassoc", "contract"}
"""The fast-math flags of the kernel's dot products (the readout): the sum may be reassociated and multiply-adds
fused, so that LLVM vectorises it. Everything else, the tanh above all, is compiled without fast-math."""


def available() -> bool:
    """Whether numba could be imported."""
    return numba is not None


def enabled(option: bool | None = None) -> bool:
    """The compiled path's switch: ``option`` when given, else off only if ``NEURORATE_COMPILED=0``."""
    if option is not None:
        return bool(option)
    return os.environ.get("NEURORATE_COMPILED", "").strip() not in ("0", "false", "no", "off")


def applies(device_type: str, form: str, activation: str, rule, kind: str, profile) -> bool:
    """Whether the compiled kernel implements this training (CPU, form A, no profile, a rule whose properties it
    computes (:func:`kernel_mode`; a name or a Rule), activation, loss)."""
    return (available() and device_type == "cpu" and form == "A" and profile is None
            and activation in ACTIVATIONS and kind in LOSS_KINDS and kernel_mode(rule) is not None)


def kernel_threads(threads: int | None = None) -> int:
    """Threads of the kernel across networks: ``threads``, else ``NEURORATE_THREADS``, else 1.

    One by default: on the busy 2-core machine a second kernel thread made every measured size slower (the wait for
    a descheduled thread at the end of each iteration; docs/benchmarks.md), and a study already runs one worker
    process per core. Ask for more where the cores are free."""
    if threads is None:
        from neurorate.backends.base import env_threads

        threads = env_threads()
    if threads is None:
        threads = 1
    cap = numba.config.NUMBA_NUM_THREADS if numba is not None else 1
    return max(1, min(int(threads), cap))


def _tanh_constants(dt: np.dtype) -> np.ndarray:
    """Constants of the kernel's tanh (``_tanh``) in the dtype ``dt``: ``1/k!`` (k = 0..13), ln 2 split in a high part
    exact in ``dt`` and a low part, 1/ln 2, the clamp of ``2|a|`` (tanh is 1 to the last bit beyond), the rounding
    constant, 32, 16, 8, 4 and 2."""
    if dt == np.float64:
        ln2_hi, ln2_lo, clamp, magic = 0.693147180369123816490, 1.90821492927058770002e-10, 40.0, 1.5 * 2.0**52
    else:
        ln2_hi, ln2_lo, clamp, magic = 0.693145751953125, 1.428606765330187045e-06, 20.0, 1.5 * 2.0**23
    fact = [1.0 / math.factorial(k) for k in range(14)]
    return np.array(fact + [ln2_hi, ln2_lo, 1.0 / math.log(2.0), clamp, magic, 32.0, 16.0, 8.0, 4.0, 2.0], dtype=dt)


class CompiledStep:
    """One training iteration of an ensemble by the kernel; updates the ensemble's weights and ``opt`` in place.

    Parameters
    ----------
    ens : the :class:`~neurorate.backends.torch.ensemble.Ensemble` (CPU tensors; its weights are updated in place).
    rule, kind : a rule the kernel computes (:func:`kernel_mode`; a name or a Rule) and "mse" or "ce".
    opt : the :class:`~neurorate.optim.EnsembleOptimizer` (its ``t`` and moments advance as with ``opt.step``).
    threads : kernel threads (None: the default of :func:`kernel_threads`).
    """

    def __init__(self, ens, rule, kind: str, opt, threads: int | None = None):
        import torch

        self.ens, self.kind, self.opt = ens, kind, opt
        self.mode = kernel_mode(rule)
        if self.mode is None:
            raise ValueError(f"the compiled kernel does not compute rule {getattr(rule, 'name', rule)!r}")
        self.requested_threads = threads
        self.dtype = ens.params["w_rec"].numpy().dtype
        names = ("w_in", "w_rec", "w_out", "b", "b_out")
        for name in names:
            p = ens.params[name]
            if not p.is_contiguous():
                ens.params[name] = p.contiguous()
        self.p = [ens.params[n].numpy() for n in names]
        self.names = names
        if opt.kind == "adam":
            for store in (opt.m1, opt.m2):
                for n in names:
                    t = store.get(n)
                    if t is None:
                        store[n] = torch.zeros_like(ens.params[n])
                    elif not t.is_contiguous() or t.dtype != ens.params[n].dtype:
                        store[n] = t.to(ens.params[n].dtype).contiguous()
        self.fb_t = np.ascontiguousarray(ens.feedback.numpy().transpose(0, 2, 1))
        self.alpha = np.ascontiguousarray(ens.alpha.numpy().reshape(-1))
        self.lr = np.ascontiguousarray(opt.lr.cpu().numpy().astype(self.dtype).reshape(-1))

    def __call__(self, x: np.ndarray, target: np.ndarray, mask: np.ndarray, active: np.ndarray):
        """Train one iteration on a batch ``x (Mx, T, B, n_in)``, ``target``/``mask`` with an optional leading
        ``Mx`` (one task per network) as :func:`neurorate.backends.torch.gradients.gradients` takes them.

        ``active (M,)`` bool is updated in place (a network whose loss is not finite becomes inactive before the
        step, as in the torch loop). Returns ``(loss (M,), accuracy (M,))`` in the ensemble's dtype.
        """
        dt = self.dtype
        m = self.p[1].shape[0]
        x = np.ascontiguousarray(x, dtype=dt)
        ce = self.kind == "ce"
        lead = x.shape[0] if x.ndim == 4 else 1
        t_steps, bsz = x.shape[1], x.shape[2]
        if ce:
            labels = np.ascontiguousarray(np.asarray(target, dtype=np.int64).reshape(lead, t_steps, bsz))
            mask4 = np.ascontiguousarray(np.asarray(mask, dtype=dt).reshape(lead, t_steps, bsz, 1))
            tgt = np.zeros((1, 1, 1, 1), dtype=dt)
        else:
            tgt = np.ascontiguousarray(np.asarray(target, dtype=dt).reshape(lead, t_steps, bsz, -1))
            mask4 = np.ascontiguousarray(np.asarray(mask, dtype=dt).reshape(tgt.shape))
            labels = np.zeros((1, 1, 1), dtype=np.int64)
        norm = np.maximum(mask4.sum(axis=(1, 2, 3), dtype=dt), dt.type(1))
        opt = self.opt
        opt.t += 1
        b1, b2 = opt.betas
        hp = np.concatenate([np.array([b1, 1 - b1, b2, 1 - b2, 1 - b1**opt.t, 1 - b2**opt.t, opt.eps, 0.5, 1.0, 0.0],
                                      dtype=dt), _tanh_constants(dt)])
        if opt.kind == "adam":
            m1 = [opt.m1[n].numpy() for n in self.names]
            m2 = [opt.m2[n].numpy() for n in self.names]
        else:
            m1 = m2 = [np.zeros((1, 1, 1), dtype=dt)] * 5
        act = np.ascontiguousarray(active, dtype=np.uint8)
        loss = np.empty(m, dtype=dt)
        acc = np.empty(m, dtype=dt)
        prev = numba.get_num_threads()
        numba.set_num_threads(min(kernel_threads(self.requested_threads), m))  # no idle thread for M < threads
        try:
            _iteration(*self.p, self.fb_t, self.alpha, x, tgt, labels, mask4, norm, ce, self.mode,
                       self.ens.activation == "tanh", opt.kind == "adam", *m1, *m2, hp, self.lr, act, loss, acc)
        finally:
            numba.set_num_threads(prev)
        active[:] = act.astype(bool)
        return loss, acc


if numba is not None:

    @njit(cache=True, fastmath=False, error_model="numpy", inline="always")
    def _tanh(a, hp):
        """``tanh(a) = 1 - 2 / (exp(2|a|) + 1)`` (sign restored, NaN kept) with ``exp`` in plain arithmetic, so that
        the loop over a row vectorises: ``2|a| = k ln2 + r`` (Cody-Waite), degree-13 Taylor polynomial of ``exp(r)``
        on ``|r| <= ln2 / 2``, ``2^k`` from the bits of ``k``. Absolute error within 2.3e-16 of the library tanh
        in float64 (1.2e-7 in float32), about 10x faster than calling it per element."""
        one, zero, two = hp[8], hp[9], hp[33]
        y = two * abs(a)
        y = y if y < hp[27] else hp[27]
        kf = (y * hp[26] + hp[28]) - hp[28]  # round to nearest (adding and removing 1.5 * 2^52, resp. 2^23)
        r = (y - kf * hp[24]) - kf * hp[25]
        e = hp[23]
        e = e * r + hp[22]
        e = e * r + hp[21]
        e = e * r + hp[20]
        e = e * r + hp[19]
        e = e * r + hp[18]
        e = e * r + hp[17]
        e = e * r + hp[16]
        e = e * r + hp[15]
        e = e * r + hp[14]
        e = e * r + hp[13]
        e = e * r + hp[12]
        e = e * r + hp[11]
        e = e * r + hp[10]
        p2 = two * two
        p4 = p2 * p2
        p8 = p4 * p4
        p16 = p8 * p8
        p32 = p16 * p16
        s = one
        b = kf >= hp[29]
        s = s * (p32 if b else one)
        kf = kf - (hp[29] if b else zero)
        b = kf >= hp[30]
        s = s * (p16 if b else one)
        kf = kf - (hp[30] if b else zero)
        b = kf >= hp[31]
        s = s * (p8 if b else one)
        kf = kf - (hp[31] if b else zero)
        b = kf >= hp[32]
        s = s * (p4 if b else one)
        kf = kf - (hp[32] if b else zero)
        b = kf >= two
        s = s * (p2 if b else one)
        kf = kf - (two if b else zero)
        b = kf >= one
        s = s * (two if b else one)
        v = one - two / (e * s + one)
        return v if a >= zero else (-v if a < zero else a)

    @njit(cache=True, fastmath=False, error_model="numpy", inline="always")
    def _fprime(r, tanh, one, zero):
        if tanh:
            return one - r * r
        return one if r > zero else zero

    @njit(cache=True, fastmath=REASSOC, error_model="numpy")
    def _readout(r, w, c, y, zero):
        """``y = c + r @ w^T`` for ``r (B, N)``, ``w (n_out, N)``: dot products over contiguous rows, vectorised
        (the sum reassociated, :data:`REASSOC`)."""
        bsz, n = r.shape
        for bi in range(bsz):
            rr = r[bi]
            for o in range(w.shape[0]):
                wr = w[o]
                s = zero
                for i in range(n):
                    s += rr[i] * wr[i]
                y[bi, o] = c[o] + s

    @njit(cache=True, fastmath=False, error_model="numpy")
    def _colsum(acc, e, scale, zero, tmp):
        """``acc[0] += scale * sum_b e[b]`` (per column, summed over the batch in order, rows vectorised)."""
        bsz, n = e.shape
        for i in range(n):
            tmp[i] = zero
        for bi in range(bsz):
            eb = e[bi]
            for i in range(n):
                tmp[i] += eb[i]
        for i in range(n):
            acc[0, i] += tmp[i] * scale

    @njit(cache=True, fastmath=False, error_model="numpy")
    def _step_out(j, t, jx, r, w_out, b_out, tgt, labels, mask, norm, ce, y, g, hp):
        """Readout ``y_t``, its loss term, output gradient ``g_t`` and the step's accuracy counts."""
        bsz, n = r.shape
        n_out = y.shape[1]
        one, zero = hp[8], hp[9]
        loss = 0.0
        hits = 0
        count = 0
        _readout(r, w_out[j], b_out[j, 0], y, zero)
        for bi in range(bsz):
            # argmax of y (first maximum; NaN counts as the maximum, as torch.argmax)
            best = 0
            for o in range(1, n_out):
                if y[bi, best] == y[bi, best] and (y[bi, o] > y[bi, best] or y[bi, o] != y[bi, o]):
                    best = o
            if ce:
                lab = labels[jx, t, bi]
                mk = mask[jx, t, bi, 0]
                mx = y[bi, 0]
                for o in range(1, n_out):
                    if y[bi, o] > mx:
                        mx = y[bi, o]
                tot = zero
                for o in range(n_out):
                    tot += np.exp(y[bi, o] - mx)
                lse = np.log(tot)
                loss += mk * (y[bi, lab] - mx - lse)
                for o in range(n_out):
                    p = np.exp(y[bi, o] - mx) / tot
                    oh = one if o == lab else zero
                    g[bi, o] = mk * (p - oh) / norm[jx]
                if lab > 0 and mk > zero:
                    count += 1
                    if best == lab:
                        hits += 1
            else:
                tbest = 0
                amax = zero
                mmax = mask[jx, t, bi, 0]
                for o in range(n_out):
                    d = y[bi, o] - tgt[jx, t, bi, o]
                    mk = mask[jx, t, bi, o]
                    loss += mk * d * d
                    g[bi, o] = mk * d / norm[jx]
                    if abs(tgt[jx, t, bi, o]) > amax:
                        amax = abs(tgt[jx, t, bi, o])
                    if mk > mmax:
                        mmax = mk
                    if tgt[jx, t, bi, o] > tgt[jx, t, bi, tbest]:
                        tbest = o
                if amax > zero and mmax > zero:
                    count += 1
                    if best == tbest:
                        hits += 1
        return loss, hits, count

    @njit(cache=True, fastmath=False, error_model="numpy")
    def _recurrent(j, t, jx, x, w_in_t, b, w_rec_t, r, state, alpha_j, keep_j, tanh, zero, rec, hp):
        """``state = keep state + alpha (U x_t + b + W r)``; then ``r = f(state)`` (both in place); ``w_in_t`` is
        network ``j``'s ``U^T (n_in, N)`` (the input drive's rows vectorised, summed over inputs in order)."""
        bsz, n = r.shape
        n_in = x.shape[3]
        bj = b[j, 0]
        for bi in range(bsz):
            rc = rec[bi]
            for i in range(n):
                rc[i] = zero
            for k in range(n_in):
                xk = x[jx, t, bi, k]
                wk = w_in_t[k]
                for i in range(n):
                    rc[i] += xk * wk[i]
            for i in range(n):
                rc[i] += bj[i]
        _outer_acc(rec, r.T, w_rec_t)
        for bi in range(bsz):
            st, rr, rc = state[bi], r[bi], rec[bi]
            for i in range(n):
                st[i] = keep_j * st[i] + alpha_j * rc[i]
            if tanh:
                for i in range(n):
                    rr[i] = _tanh(st[i], hp)
            else:
                for i in range(n):
                    rr[i] = st[i] if not (st[i] <= zero) else zero  # ReLU, NaN kept

    @njit(cache=True, fastmath=REASSOC, error_model="numpy")
    def _outer_acc(acc, e, v):
        """``acc += e^T v`` for ``e (K, P)``, ``v (K, Q)`` (``v``'s and ``acc``'s rows contiguous; ``e`` may be a
        transposed view): the kernel's one matrix product. Two rows of ``acc`` per pass share the loads of eight
        rows of ``v``, whose products are summed as a tree (:data:`REASSOC`), so that LLVM keeps the partial sums
        in vector registers and each row of ``acc`` is loaded and stored once per eight multiply-adds. The forward
        step is ``_outer_acc(rec, r.T, W^T)``, BPTT's backward ``_outer_acc(back, delta.T, W)``, the gradients
        ``_outer_acc(dW, e, rbar)``."""
        kk, p = e.shape
        k8 = kk - kk % 8
        p2 = p - p % 2
        for i in range(0, p2, 2):
            row, rw1 = acc[i], acc[i + 1]
            for b0 in range(0, k8, 8):
                s0, s1, s2, s3 = e[b0, i], e[b0 + 1, i], e[b0 + 2, i], e[b0 + 3, i]
                s4, s5, s6, s7 = e[b0 + 4, i], e[b0 + 5, i], e[b0 + 6, i], e[b0 + 7, i]
                t0, t1, t2, t3 = e[b0, i + 1], e[b0 + 1, i + 1], e[b0 + 2, i + 1], e[b0 + 3, i + 1]
                t4, t5, t6, t7 = e[b0 + 4, i + 1], e[b0 + 5, i + 1], e[b0 + 6, i + 1], e[b0 + 7, i + 1]
                v0, v1, v2, v3 = v[b0], v[b0 + 1], v[b0 + 2], v[b0 + 3]
                v4, v5, v6, v7 = v[b0 + 4], v[b0 + 5], v[b0 + 6], v[b0 + 7]
                for k in range(row.shape[0]):
                    x0, x1, x2, x3, x4, x5, x6, x7 = v0[k], v1[k], v2[k], v3[k], v4[k], v5[k], v6[k], v7[k]
                    row[k] += (((s0 * x0 + s1 * x1) + (s2 * x2 + s3 * x3))
                               + ((s4 * x4 + s5 * x5) + (s6 * x6 + s7 * x7)))
                    rw1[k] += (((t0 * x0 + t1 * x1) + (t2 * x2 + t3 * x3))
                               + ((t4 * x4 + t5 * x5) + (t6 * x6 + t7 * x7)))
            for bi in range(k8, kk):
                s, t = e[bi, i], e[bi, i + 1]
                vb = v[bi]
                for k in range(row.shape[0]):
                    row[k] += s * vb[k]
                    rw1[k] += t * vb[k]
        for i in range(p2, p):  # an odd last row
            row = acc[i]
            for bi in range(kk):
                s = e[bi, i]
                vb = v[bi]
                for k in range(row.shape[0]):
                    row[k] += s * vb[k]

    @njit(cache=True, fastmath=False, error_model="numpy")
    def _update(p, g, m1, m2, j, adam, lr, hp):
        """Adam or SGD on network ``j`` of ``p (M, a, c)`` with its gradient ``g (a, c)`` (lr 0 when frozen)."""
        a, c = g.shape
        for u in range(a):
            for v in range(c):
                if adam:
                    m1[j, u, v] = m1[j, u, v] * hp[0] + hp[1] * g[u, v]
                    m2[j, u, v] = m2[j, u, v] * hp[2] + hp[3] * g[u, v] * g[u, v]
                    denom = np.sqrt(m2[j, u, v] / hp[5]) + hp[6]
                    p[j, u, v] = p[j, u, v] - lr * (m1[j, u, v] / hp[4]) / denom
                else:
                    p[j, u, v] = p[j, u, v] - lr * g[u, v]

    @njit(parallel=True, cache=True, fastmath=False, error_model="numpy")
    def _iteration(w_in, w_rec, w_out, b, b_out, fb_t, alpha, x, tgt, labels, mask, norm, ce, mode, tanh, adam,
                   m1_in, m1_rec, m1_out, m1_b, m1_bout, m2_in, m2_rec, m2_out, m2_b, m2_bout, hp, lrs, active,
                   loss_out, acc_out):
        """All networks of the ensemble, one per ``prange`` iteration (the body is :func:`_network`)."""
        for jp in prange(w_rec.shape[0]):
            _network(np.int64(jp), w_in, w_rec, w_out, b, b_out, fb_t, alpha, x, tgt, labels, mask, norm, ce, mode,
                     tanh, adam, m1_in, m1_rec, m1_out, m1_b, m1_bout, m2_in, m2_rec, m2_out, m2_b, m2_bout, hp, lrs,
                     active, loss_out, acc_out)

    @njit(cache=True, fastmath=False, error_model="numpy")
    def _network(j, w_in, w_rec, w_out, b, b_out, fb_t, alpha, x, tgt, labels, mask, norm, ce, mode, tanh, adam,
                 m1_in, m1_rec, m1_out, m1_b, m1_bout, m2_in, m2_rec, m2_out, m2_b, m2_bout, hp, lrs, active,
                 loss_out, acc_out):
        """Network ``j``: forward, gradient, loss, accuracy, freeze check and optimizer step."""
        m, n, n_in = w_in.shape
        n_out = w_out.shape[1]
        t_steps, bsz = x.shape[1], x.shape[2]
        dt = w_rec.dtype
        one, zero = hp[8], hp[9]
        jx = j if x.shape[0] > 1 else np.int64(0)
        jt = j if mask.shape[0] > 1 else np.int64(0)
        alpha_j = alpha[j]
        keep_j = one - alpha_j
        w_rec_t = np.ascontiguousarray(w_rec[j].T)
        w_in_t = np.ascontiguousarray(w_in[j].T)
        colsum = np.zeros(n, dtype=dt)
        state = np.zeros((bsz, n), dtype=dt)
        r = np.zeros((bsz, n), dtype=dt)
        rec = np.zeros((bsz, n), dtype=dt)
        y = np.zeros((bsz, n_out), dtype=dt)
        g = np.zeros((bsz, n_out), dtype=dt)
        e = np.zeros((bsz, n), dtype=dt)
        g_in = np.zeros((n, n_in), dtype=dt)
        g_in_t = np.zeros((n_in, n), dtype=dt)  # accumulated as U's transpose: rows of length N, vectorised
        g_rec = np.zeros((n, n), dtype=dt)
        g_out = np.zeros((n_out, n), dtype=dt)
        g_b = np.zeros((1, n), dtype=dt)
        g_bout = np.zeros((1, n_out), dtype=dt)
        loss = 0.0
        hits = 0
        count = 0
        if mode < 2:  # e-prop (factorised form A), symmetric or random feedback
            fb = w_out[j] if mode == 0 else fb_t[j]
            rbar = np.zeros((bsz, n), dtype=dt)
            xbar = np.zeros((bsz, n_in), dtype=dt)
            bbar = zero
            xt = np.zeros((bsz, n_in), dtype=dt)
            for t in range(t_steps):
                for bi in range(bsz):
                    for i in range(n):
                        rbar[bi, i] = rbar[bi, i] * keep_j + alpha_j * r[bi, i]
                    for k in range(n_in):
                        xt[bi, k] = x[jx, t, bi, k]
                        xbar[bi, k] = xbar[bi, k] * keep_j + alpha_j * xt[bi, k]
                bbar = bbar * keep_j + alpha_j
                _recurrent(j, t, jx, x, w_in_t, b, w_rec_t, r, state, alpha_j, keep_j, tanh, zero, rec, hp)
                lo, hi, co = _step_out(j, t, jt, r, w_out, b_out, tgt, labels, mask, norm, ce, y, g, hp)
                loss += lo
                hits += hi
                count += co
                for bi in range(bsz):  # e = (g B) * f'(r), rows vectorised, summed over outputs in order
                    eb, rb = e[bi], r[bi]
                    for i in range(n):
                        eb[i] = zero
                    for o in range(n_out):
                        go, fo = g[bi, o], fb[o]
                        for i in range(n):
                            eb[i] += go * fo[i]
                    for i in range(n):
                        eb[i] = eb[i] * _fprime(rb[i], tanh, one, zero)
                _outer_acc(g_rec, e, rbar)
                _outer_acc(g_in_t, xbar, e)
                _colsum(g_b, e, bbar, zero, colsum)
                _outer_acc(g_out, g, r)
                for o in range(n_out):
                    s = zero
                    for bi in range(bsz):
                        s += g[bi, o]
                    g_bout[0, o] += s
        else:  # BPTT (SnAp-1): forward keeping the rates, then the hand-written backward pass
            rates = np.zeros((t_steps, bsz, n), dtype=dt)
            gs = np.zeros((t_steps, bsz, n_out), dtype=dt)
            for t in range(t_steps):
                _recurrent(j, t, jx, x, w_in_t, b, w_rec_t, r, state, alpha_j, keep_j, tanh, zero, rec, hp)
                rates[t] = r
                lo, hi, co = _step_out(j, t, jt, r, w_out, b_out, tgt, labels, mask, norm, ce, y, g, hp)
                gs[t] = g
                loss += lo
                hits += hi
                count += co
                _outer_acc(g_out, g, r)
                for o in range(n_out):
                    s = zero
                    for bi in range(bsz):
                        s += g[bi, o]
                    g_bout[0, o] += s
            delta = np.zeros((bsz, n), dtype=dt)
            back = np.zeros((bsz, n), dtype=dt)
            xt = np.zeros((bsz, n_in), dtype=dt)
            w_j = w_rec[j]
            for t in range(t_steps - 1, -1, -1):
                if mode == 2:
                    back[:] = zero
                    _outer_acc(back, delta.T, w_j)  # W^T delta_{t+1} as rows
                else:  # SnAp-1: only the self-connections, W_kk delta_{t+1,k}
                    for bi in range(bsz):
                        for i in range(n):
                            back[bi, i] = w_j[i, i] * delta[bi, i]
                for bi in range(bsz):  # rows vectorised; the readout's term summed over outputs in order
                    eb, db, bb, rt = e[bi], delta[bi], back[bi], rates[t, bi]
                    for i in range(n):
                        eb[i] = zero
                    for o in range(n_out):
                        go, wo = gs[t, bi, o], w_out[j, o]
                        for i in range(n):
                            eb[i] += go * wo[i]
                    for i in range(n):
                        v = bb[i] * alpha_j + eb[i]
                        db[i] = v * _fprime(rt[i], tanh, one, zero) + keep_j * db[i]
                        eb[i] = alpha_j * db[i]
                    for k in range(n_in):
                        xt[bi, k] = x[jx, t, bi, k]
                if t > 0:
                    _outer_acc(g_rec, e, rates[t - 1])
                _outer_acc(g_in_t, xt, e)
                _colsum(g_b, e, one, zero, colsum)
        for i in range(n):
            for k in range(n_in):
                g_in[i, k] = g_in_t[k, i]
        if ce:
            lv = -loss / norm[jt]
        else:
            lv = hp[7] * loss / norm[jt]
        loss_out[j] = lv
        acc_out[j] = hits / count if count > 0 else np.nan
        if not np.isfinite(loss_out[j]):
            active[j] = 0
        on = active[j] != 0
        lr = lrs[j] if on else zero
        if not on:
            g_in[:] = zero
            g_rec[:] = zero
            g_out[:] = zero
            g_b[:] = zero
            g_bout[:] = zero
        _update(w_in, g_in, m1_in, m2_in, j, adam, lr, hp)
        _update(w_rec, g_rec, m1_rec, m2_rec, j, adam, lr, hp)
        _update(w_out, g_out, m1_out, m2_out, j, adam, lr, hp)
        _update(b, g_b, m1_b, m2_b, j, adam, lr, hp)
        _update(b_out, g_bout, m1_bout, m2_bout, j, adam, lr, hp)
