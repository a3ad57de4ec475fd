"""NetworkSpec: everything that defines a rate RNN and nothing about how it runs.

The network (docs/theory.md §1.2; N hidden units, weights ``W = w_rec (N, N)``, ``U = w_in (N, n_in)``,
``V = w_out (n_out, N)``, biases ``b (N,)``, ``c = b_out (n_out,)``, leak ``alpha = dt / tau``)::

    form A  a_t = (1-alpha) a_{t-1} + alpha (W f(a_{t-1}) + U x_t + b),   y_t = V f(a_t) + c     (state a)
    form B  h_t = f((1-alpha) h_{t-1} + alpha (W h_{t-1} + U x_t + b)),   y_t = V h_t + c        (state h)
    form C  h_t = (1-alpha) h_{t-1} + alpha f(W h_{t-1} + U x_t + b),     y_t = V h_t + c        (state h)

Initial recurrent weights are ``W ~ N(0, gain^2 / N)``. The random streams of W, U, V and the feedback
matrix are independent children of one seed, so two specs that differ only in ``gain`` share the same
underlying Gaussian matrix (the gain is then the only difference between them).

A spec holds plain numpy arrays; every backend takes the identical spec. It saves to a single ``.npz``
(arrays plus a JSON header, never pickled).
"""

from __future__ import annotations

import dataclasses
import json
import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from neurorate.errors import FileFormatError, NeurorateError, SpecError, as_int, as_real
from neurorate.learning.feedback import FEEDBACK_INITS, draw_feedback

FORMS = ("A", "B", "C")
ACTIVATIONS = ("tanh", "relu", "identity")
INPUT_INITS = ("torch", "schuessler")
GAIN_MEASURES = ("frobenius", "spectral_radius")
_ARRAYS = ("w_in", "w_rec", "w_out", "b", "b_out", "feedback")
MAX_GAIN = 1e6
"""The largest initial gain :meth:`NetworkSpec.random` draws (the study config's ceiling too): at larger gains the
recurrent drive overflows float32 within a few steps, so no run could train."""


@dataclasses.dataclass(eq=False)
class NetworkSpec:
    """A rate RNN: weights, form, activation and leak. Plain numpy arrays, backend-neutral.

    Parameters
    ----------
    w_in : (N, n_in) input weights U.
    w_rec : (N, N) recurrent weights W.
    w_out : (n_out, N) readout weights V.
    b : (N,) hidden bias.
    b_out : (n_out,) readout bias.
    alpha : leak ``dt / tau`` in (0, 1].
    form : "A" (leaky current, default), "B" (nn-brain) or "C" (leaky rate, Murray), see module docstring.
    activation : "tanh", "relu" or "identity".
    feedback : (N, n_out) fixed random feedback matrix B for ``eprop_random`` / ``rflo`` (None: drawn
        on demand from ``init['seed']``).
    dt : time step in seconds if known (used for Lyapunov exponents per second), else None.
    init : the recipe that made the weights (gain, seed, rank, ...); provenance only.
    """

    w_in: np.ndarray
    w_rec: np.ndarray
    w_out: np.ndarray
    b: np.ndarray
    b_out: np.ndarray
    alpha: float = 0.5
    form: str = "A"
    activation: str = "tanh"
    feedback: np.ndarray | None = None
    dt: float | None = None
    init: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.w_in = _as_matrix(self.w_in, "w_in")
        self.w_rec = _as_matrix(self.w_rec, "w_rec")
        self.w_out = _as_matrix(self.w_out, "w_out")
        self.b = _as_real(self.b, "b").reshape(-1)
        self.b_out = _as_real(self.b_out, "b_out").reshape(-1)
        n = self.w_rec.shape[0]
        if self.w_rec.shape != (n, n):
            raise SpecError(f"w_rec must be square (N, N), got {self.w_rec.shape}")
        if n < 1:
            raise SpecError("the network needs at least one hidden unit")
        if self.w_in.shape[0] != n:
            raise SpecError(f"w_in must have shape (N={n}, n_in), got {self.w_in.shape}")
        if self.w_out.shape[1] != n:
            raise SpecError(f"w_out must have shape (n_out, N={n}), got {self.w_out.shape}")
        if self.b.shape != (n,):
            raise SpecError(f"b must have shape (N={n},), got {self.b.shape}")
        if self.b_out.shape != (self.w_out.shape[0],):
            raise SpecError(f"b_out must have shape (n_out={self.w_out.shape[0]},), got {self.b_out.shape}")
        if self.feedback is not None:
            self.feedback = _as_matrix(self.feedback, "feedback")
            if self.feedback.shape != (n, self.w_out.shape[0]):
                raise SpecError(
                    f"feedback must have shape (N={n}, n_out={self.w_out.shape[0]}), got {self.feedback.shape}"
                )
        self.alpha = _as_number(self.alpha, "alpha = dt/tau")
        if not (0.0 < self.alpha <= 1.0) or not math.isfinite(self.alpha):
            raise SpecError(f"alpha = dt/tau must be in (0, 1], got {self.alpha}")
        if not isinstance(self.form, str) or self.form not in FORMS:
            raise SpecError(f"unknown form {self.form!r}; choose one of {', '.join(FORMS)}")
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise SpecError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.dt is not None:
            self.dt = _as_number(self.dt, "dt")
            if not (self.dt > 0 and math.isfinite(self.dt)):
                raise SpecError(f"dt must be positive and finite (seconds), got {self.dt}")
        if not isinstance(self.init, dict):
            raise SpecError(f"init must be a dict (the recipe of the weights), got {type(self.init).__name__}")
        for name in _ARRAYS:
            arr = getattr(self, name)
            if arr is not None and not np.all(np.isfinite(arr)):
                raise SpecError(f"{name} contains NaN or inf")

    # ------------------------------------------------------------------ sizes
    @property
    def n_hidden(self) -> int:
        """Number of hidden units N."""
        return self.w_rec.shape[0]

    @property
    def n_in(self) -> int:
        """Number of input channels."""
        return self.w_in.shape[1]

    @property
    def n_out(self) -> int:
        """Number of output channels."""
        return self.w_out.shape[0]

    @property
    def gain(self) -> float:
        """Measured gain ``||W_rec||_F / sqrt(N)`` (equals g in expectation for ``W ~ N(0, g^2/N)``)."""
        return float(np.linalg.norm(self.w_rec) / math.sqrt(self.n_hidden))

    # ------------------------------------------------------------------ construction
    @classmethod
    def random(
        cls,
        n_in: int = 1,
        n_hidden: int = 64,
        n_out: int = 2,
        gain: float = 1.0,
        seed: int = 0,
        form: str = "A",
        activation: str = "tanh",
        alpha: float = 0.5,
        input_init: str = "torch",
        input_bias: bool = True,
        recurrent_bias: bool = True,
        rank: int | None = None,
        w_rec: np.ndarray | None = None,
        gain_measure: str = "frobenius",
        feedback_init: str = "uniform",
        dt: float | None = None,
    ) -> NetworkSpec:
        """Draw a network with recurrent gain ``gain``.

        Parameters
        ----------
        gain : ``W_rec ~ N(0, gain^2 / N)`` (or the user matrix ``w_rec`` rescaled to this gain).
        seed : seeds every random stream (W_rec, W_in/biases, W_out, feedback) independently.
        input_init : "torch" = PyTorch ``nn.Linear`` defaults as in the nn-brain CTRNN the paper built on
            (``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases; b = input bias + recurrent
            bias); "schuessler" = unit-norm input columns scaled by sqrt(N), readout rows of norm
            1/sqrt(N), no biases (Schuessler et al. 2020).
        input_bias, recurrent_bias : switch the two torch-default bias terms (with ``n_in = 1`` the input
            bias is U(-1, 1) and saturates tanh units, lowering the effective gain).
        rank : if given, truncate W_rec to this rank by SVD and rescale to the original Frobenius norm
            (rich/lazy low-rank initialisation).
        w_rec : a user matrix (N, N) rescaled so its ``gain_measure`` equals ``gain``.
        gain_measure : "frobenius" (``||W||_F / sqrt(N)``, the random init's meaning) or
            "spectral_radius" (``max |eig W|``); only used with ``w_rec``.
        feedback_init : random feedback B for ``eprop_random``/``rflo``: "uniform" = ``U(+-1/sqrt(N))``
            (the readout's scale) or "gaussian" = ``N(0, 1/n_out)``.
        """
        try:
            n_in, n, n_out = (as_int(v, name, minimum=1) for name, v in (("n_in", n_in), ("n_hidden", n_hidden),
                                                                       ("n_out", n_out)))
            gain = as_real(gain, "gain")
            seed = as_int(seed, "seed", minimum=0)
            if rank is not None:
                rank = as_int(rank, "rank", minimum=1)
        except NeurorateError as exc:
            raise SpecError(str(exc)) from None
        if not gain >= 0:
            raise SpecError(f"gain must be >= 0, got {gain:g}")
        if not gain <= MAX_GAIN:
            raise SpecError(f"gain must be finite and at most {MAX_GAIN:g}, got {gain:g} (W_rec ~ N(0, g^2/N) at a "
                            "larger gain overflows the state within a few steps)")
        if input_init not in INPUT_INITS:
            raise SpecError(f"unknown input_init {input_init!r}; choose one of {', '.join(INPUT_INITS)}")
        if feedback_init not in FEEDBACK_INITS:
            raise SpecError(f"unknown feedback_init {feedback_init!r}; choose one of {', '.join(FEEDBACK_INITS)}")
        if gain_measure not in GAIN_MEASURES:
            raise SpecError(f"unknown gain_measure {gain_measure!r}; choose one of {', '.join(GAIN_MEASURES)}")
        seeds = np.random.SeedSequence(int(seed)).spawn(4)
        rec_rng, in_rng, out_rng, fb_rng = (np.random.default_rng(s) for s in seeds)

        if w_rec is None:
            w = rec_rng.standard_normal((n, n)) * (gain / math.sqrt(n))
        else:
            w = scale_to_gain(np.asarray(w_rec, dtype=np.float64), gain, measure=gain_measure)
            if w.shape != (n, n):
                raise SpecError(f"w_rec must have shape ({n}, {n}), got {w.shape}")
        if rank is not None:
            w = low_rank(w, rank)

        if input_init == "torch":
            k_in, k_rec = 1.0 / math.sqrt(n_in), 1.0 / math.sqrt(n)
            u = in_rng.uniform(-k_in, k_in, (n, n_in))
            b_in = in_rng.uniform(-k_in, k_in, n)
            b_rec = in_rng.uniform(-k_rec, k_rec, n)
            b = b_in * float(input_bias) + b_rec * float(recurrent_bias)
            v = out_rng.uniform(-k_rec, k_rec, (n_out, n))
            c = out_rng.uniform(-k_rec, k_rec, n_out)
        else:
            u = in_rng.standard_normal((n, n_in))
            u *= math.sqrt(n) / np.linalg.norm(u, axis=0, keepdims=True)
            v = out_rng.standard_normal((n_out, n))
            v *= 1.0 / (math.sqrt(n) * np.linalg.norm(v, axis=1, keepdims=True))
            b = np.zeros(n)
            c = np.zeros(n_out)
        if not np.all(np.isfinite(w)):  # a user matrix scaled to the gain can overflow
            raise SpecError(f"gain {gain:g} makes W_rec overflow (its entries are not finite numbers); use a smaller "
                            "gain")
        fb = draw_feedback(fb_rng, n, n_out, feedback_init)  # the recipe of every backend (docs/rules.md)
        init = dict(
            gain=float(gain), seed=int(seed), input_init=input_init, input_bias=bool(input_bias),
            recurrent_bias=bool(recurrent_bias), rank=rank, user_matrix=w_rec is not None,
            gain_measure=gain_measure, feedback_init=feedback_init,
        )
        return cls(w_in=u, w_rec=w, w_out=v, b=b, b_out=c, alpha=alpha, form=form, activation=activation,
                   feedback=fb, dt=dt, init=init)

    def replace(self, **changes: Any) -> NetworkSpec:
        """A copy with some fields replaced (arrays are copied)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields.update(changes)
        for name in _ARRAYS:
            if fields[name] is not None:
                fields[name] = np.array(fields[name], dtype=np.float64, copy=True)
        fields["init"] = dict(fields["init"])
        return NetworkSpec(**fields)

    def copy(self) -> NetworkSpec:
        """A deep copy."""
        return self.replace()

    # ------------------------------------------------------------------ serialisation
    def meta(self) -> dict:
        """The JSON-able, non-array part of the spec."""
        return dict(alpha=self.alpha, form=self.form, activation=self.activation, dt=self.dt,
                    init=_jsonable(self.init), neurorate_spec_version=1)

    def to_dict(self) -> dict:
        """A JSON-able dict (arrays as nested lists)."""
        d = self.meta()
        for name in _ARRAYS:
            arr = getattr(self, name)
            d[name] = None if arr is None else arr.tolist()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> NetworkSpec:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d.pop("neurorate_spec_version", None)
        return cls(**{k: (np.asarray(v) if k in _ARRAYS and v is not None else v) for k, v in d.items()})

    def save(self, path: str | Path) -> Path:
        """Write arrays and a JSON header to one ``.npz`` file (no pickle)."""
        path = Path(path)
        arrays = {n: getattr(self, n) for n in _ARRAYS if getattr(self, n) is not None}
        header = np.frombuffer(json.dumps(self.meta()).encode(), dtype=np.uint8)
        with open(path, "wb") as fh:
            np.savez(fh, __meta__=header, **arrays)
        return path

    @classmethod
    def load(cls, path: str | Path) -> NetworkSpec:
        """Read a spec written by :meth:`save`; a malformed file raises a one-line :class:`FileFormatError`."""
        path = Path(path)
        if not path.is_file():
            raise FileFormatError(f"{path}: no such spec file")
        check_npz(path)  # array sizes from the headers, before anything is allocated
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(bytes(z["__meta__"]).decode())
                arrays = {n: z[n] for n in _ARRAYS if n in z.files}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as exc:
            raise FileFormatError(f"{path}: not a readable neurorate spec file ({type(exc).__name__}: {exc})") from None
        if not isinstance(meta, dict):
            raise FileFormatError(f"{path}: not a neurorate spec file (its header is a {type(meta).__name__}, "
                                  "not a JSON object)")
        meta.pop("neurorate_spec_version", None)
        try:
            return cls(**arrays, **meta)
        except TypeError as exc:
            raise FileFormatError(f"{path}: not a neurorate spec file ({exc})") from None
        except SpecError as exc:
            raise FileFormatError(f"{path}: not a valid neurorate network ({exc})") from None


def max_array_elements() -> int:
    """The most elements one array of a saved spec may claim: a ``W_rec`` at the largest hidden size
    (:data:`neurorate.training.LIMITS`, 8192^2, 512 MiB in float64), unlimited with ``NEURORATE_ALLOW_LARGE=1``
    (the memory check of :func:`check_npz` stays)."""
    from neurorate.training import LIMITS, _allow_large

    return -1 if _allow_large(False) else LIMITS["hidden"] ** 2


def check_npz(path: str | Path) -> None:
    """Refuse a ``.npz`` whose arrays claim more than :func:`max_array_elements` elements, or more bytes than the
    available memory, in one :class:`FileFormatError` line, before any array is read: the shapes and dtypes come
    from each member's ``.npy`` header (``numpy.lib.format``), so a 2 KB file whose header claims a 10^6 x 10^6
    array costs nothing. A file that is not a readable zip or ``.npy`` is left to the loader, which says so."""
    from numpy.lib import format as npy

    from neurorate.training import _gib, available_bytes

    limit = max_array_elements()
    headers = []  # (member, shape, dtype) of every .npy header that parses
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fh:
                    version = npy.read_magic(fh)
                    if version == (1, 0):
                        headers.append((info.filename[:-4], *npy.read_array_header_1_0(fh)))
                    elif version == (2, 0):
                        headers.append((info.filename[:-4], *npy.read_array_header_2_0(fh)))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, SyntaxError, RuntimeError, NotImplementedError):
        return  # not a readable zip of .npy arrays: the loader refuses it with its own line
    total = 0
    for name, shape, _, dtype in headers:
        count = math.prod(int(d) for d in shape)
        if limit >= 0 and count > limit:
            dims = " x ".join(str(int(d)) for d in shape)
            raise FileFormatError(f"{path}: array {name!r} claims {dims} = {count:,} elements, more than the {limit:,} "
                                  "of a network at the largest hidden size; not a spec file neurorate wrote "
                                  "(NEURORATE_ALLOW_LARGE=1 lifts the ceiling)")
        total += count * int(dtype.itemsize)
    avail = available_bytes()
    if avail is not None and total > avail:
        raise FileFormatError(f"{path}: its arrays claim {_gib(total)} but only {_gib(avail)} of memory is available")


def _as_real(a, name: str) -> np.ndarray:
    """``a`` as a float64 array; an array of strings, complex numbers or objects is a :class:`SpecError`."""
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{name} must be an array of real numbers ({exc})") from None
    if arr.dtype.kind not in "biuf":
        raise SpecError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _as_number(value, name: str) -> float:
    """``value`` as a float; a string, array or other non-number is a :class:`SpecError`."""
    if isinstance(value, (str, bytes)) or np.ndim(value) != 0:
        raise SpecError(f"{name} must be a number, got {value!r:.60}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number, got {value!r:.60}") from None


def _as_matrix(a, name: str) -> np.ndarray:
    arr = _as_real(a, name)
    if arr.ndim != 2:
        raise SpecError(f"{name} must be a 2-D array, got shape {arr.shape}")
    return arr


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def scale_to_gain(w: np.ndarray, gain: float, measure: str = "frobenius") -> np.ndarray:
    """Rescale a square matrix so that its gain (``||W||_F/sqrt(N)`` or spectral radius) equals ``gain``."""
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise SpecError(f"a recurrent matrix must be square, got shape {w.shape}")
    if measure == "frobenius":
        current = np.linalg.norm(w) / math.sqrt(w.shape[0])
    elif measure == "spectral_radius":
        current = float(np.max(np.abs(np.linalg.eigvals(w))))
    else:
        raise SpecError(f"unknown gain measure {measure!r}; choose one of {', '.join(GAIN_MEASURES)}")
    if not math.isfinite(current):
        raise SpecError(f"cannot rescale a recurrent matrix whose {measure} gain is not a finite number ({current})")
    if current == 0:
        if gain == 0:
            return w.copy()
        raise SpecError("cannot rescale an all-zero matrix to a non-zero gain")
    with np.errstate(over="ignore", invalid="ignore"):
        out = w * (gain / current)
    if not np.all(np.isfinite(out)):
        raise SpecError(f"gain {gain:g} makes W_rec overflow (its entries are not finite numbers); use a smaller gain")
    return out


def low_rank(w: np.ndarray, rank: int) -> np.ndarray:
    """Rank-``rank`` truncated SVD of ``w``, rescaled to the Frobenius norm of ``w`` (Liu et al. 2024)."""
    n = w.shape[0]
    if int(rank) != rank or not (1 <= rank <= n):
        raise SpecError(f"rank must be an integer in [1, N={n}], got {rank}")
    u, s, vt = np.linalg.svd(w)
    wr = (u[:, :rank] * s[:rank]) @ vt[:rank]
    norm_r = np.linalg.norm(wr)
    return wr if norm_r == 0 else wr * (np.linalg.norm(w) / norm_r)


def effective_rank(w: np.ndarray) -> float:
    """Roy & Vetterli (2007) effective rank ``exp(-sum p_k log p_k)``, ``p_k = s_k / sum s``."""
    s = np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False)
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def participation_ratio(w: np.ndarray) -> float:
    """Participation ratio of the singular values ``(sum s^2)^2 / sum s^4``."""
    s2 = np.linalg.svd(np.asarray(w, dtype=np.float64), compute_uv=False) ** 2
    denom = (s2**2).sum()
    return 0.0 if denom == 0 else float(s2.sum() ** 2 / denom)
