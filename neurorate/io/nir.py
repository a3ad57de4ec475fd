"""NIR (Neuromorphic Intermediate Representation) export and import of neurorate rate networks.

A rate network becomes the graph (docs/nir.md)::

    input -> Affine(W_in, b) -> LI(tau, r=1, v_leak=0) <-> Linear(W_rec)
                                LI -> Affine(W_out, b_out) -> output

with vector-valued LI parameters of length N and ``tau = dt / alpha``. NIR's LI obeys
``tau v' = (v_leak - v) + r I``; one explicit-Euler step of length ``dt`` is
``v <- v + (dt/tau) (-v + I)``, which is form A, ``a_t = (1-alpha) a_{t-1} + alpha (W f(a_{t-1}) + U x_t + b)``,
once the activation ``f`` is applied to the LI state before it leaves the node (towards ``W_rec`` and the
readout). The recurrent edge is read with a one-step delay (the value ``W f(a_{t-1})`` of the previous step),
exactly what the Euler step needs.

NIR has no node for a static nonlinearity, so ``f`` and the form are recorded in metadata that is **outside
the NIR standard** (graph and LI node): ``neurorate.activation``, ``neurorate.form``, ``neurorate.alpha``,
``neurorate.dt``, ``neurorate.dt_nominal``, ``neurorate.version`` (plus ``neurorate.feedback`` and
``neurorate.init`` for a lossless round trip). A consumer that ignores it runs a *linear* LI RNN.
Forms B (``v <- f((1-alpha) v + alpha I)``) and C (``v <- v + alpha (-v + f(I))``) use the same graph; only a
consumer that honours ``neurorate.form`` runs them correctly (:func:`to_torch` does).

Files are HDF5 (read with h5py; nothing is ever unpickled).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from neurorate.errors import FileFormatError, NeurorateError, SpecError, require
from neurorate.model.spec import NetworkSpec

NOMINAL_DT = 1e-3
"""Time step (seconds) used to turn ``alpha`` into ``tau = dt / alpha`` when the spec has no ``dt``."""

_NEURONS = ("LI", "LIF", "CubaLIF")


def _nir():
    return require("nir", "nir", "NIR export/import")


def _version() -> str:
    import neurorate

    return neurorate.__version__


def rate_metadata(spec: NetworkSpec, dt: float, nominal: bool) -> dict[str, Any]:
    """The (non-standard) ``neurorate.*`` metadata that lets a consumer run the rate network exactly."""
    meta: dict[str, Any] = {
        "neurorate.activation": spec.activation,
        "neurorate.form": spec.form,
        "neurorate.alpha": float(spec.alpha),
        "neurorate.dt": float(dt),
        "neurorate.dt_nominal": int(nominal),
        "neurorate.version": _version(),
    }
    return meta


def graph_metadata(spec: NetworkSpec, meta: dict[str, Any]) -> dict[str, Any]:
    """The graph-level metadata: the neuron metadata plus the init recipe and the feedback matrix (lossless)."""
    graph_meta = dict(meta, **{"neurorate.init": json.dumps(spec.meta()["init"])})
    if spec.feedback is not None:
        graph_meta["neurorate.feedback"] = np.array(spec.feedback)
    return graph_meta


def input_nodes(nir, spec: NetworkSpec) -> dict[str, Any]:
    """The ``input`` and ``w_in`` (Affine with the hidden bias) nodes shared by rate and LIF graphs."""
    return {"input": nir.Input(input_type={"input": np.array([spec.n_in])}),
            "w_in": nir.Affine(weight=spec.w_in.copy(), bias=spec.b.copy())}


def to_nir(spec: NetworkSpec, dt: float | None = None):
    """Export a rate network to a ``nir.NIRGraph``.

    Parameters
    ----------
    spec : the network (any form; form A is the one a plain LI consumer runs up to the activation).
    dt : Euler step in seconds (default ``spec.dt``, else :data:`NOMINAL_DT`); sets ``tau = dt / alpha``.

    Returns
    -------
    nir.NIRGraph with nodes ``input, w_in, li, w_rec, w_out, output``.
    """
    if dt is not None and not (float(dt) > 0 and np.isfinite(float(dt))):
        raise NeurorateError(f"dt must be positive and finite (seconds), got {dt}")
    if not isinstance(spec, NetworkSpec):
        from neurorate.model.spiking import LIFNetwork

        if isinstance(spec, LIFNetwork):
            return lif_to_nir(spec, dt=dt)
        raise NeurorateError(f"to_nir needs a NetworkSpec or LIFNetwork, got {type(spec).__name__}")
    nir = _nir()
    nominal = dt is None and spec.dt is None
    dt = float(dt if dt is not None else (spec.dt if spec.dt is not None else NOMINAL_DT))
    if not (dt > 0 and np.isfinite(dt)):
        raise NeurorateError(f"dt must be positive and finite (seconds), got {dt}")
    n = spec.n_hidden
    meta = rate_metadata(spec, dt, nominal)
    graph_meta = graph_metadata(spec, meta)
    nodes = {
        **input_nodes(nir, spec),
        "li": nir.LI(tau=np.full(n, dt / spec.alpha), r=np.ones(n), v_leak=np.zeros(n), metadata=meta),
        "w_rec": nir.Linear(weight=spec.w_rec.copy()),
        "w_out": nir.Affine(weight=spec.w_out.copy(), bias=spec.b_out.copy()),
        "output": nir.Output(output_type={"output": np.array([spec.n_out])}),
    }
    edges = [("input", "w_in"), ("w_in", "li"), ("li", "w_rec"), ("w_rec", "li"), ("li", "w_out"),
             ("w_out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_meta)


def write_nir(spec, path: str | Path, dt: float | None = None) -> Path:
    """Export ``spec`` (rate :class:`NetworkSpec` or spiking ``LIFNetwork``) with :func:`to_nir` to an HDF5 file."""
    nir = _nir()
    path = Path(path)
    graph = to_nir(spec, dt=dt)
    try:
        nir.write(path, graph)
    except OSError as exc:
        raise NeurorateError(f"{path}: cannot write the NIR file ({exc})") from None
    return path


def read_nir(path: str | Path):
    """Read a NIR file; a missing, truncated or malformed file raises a one-line :class:`FileFormatError`."""
    nir = _nir()
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"{path}: no such NIR file")
    _check_dataset_sizes(path)
    try:
        return nir.read(path)
    except (OSError, KeyError, ValueError, TypeError, AssertionError, AttributeError, RuntimeError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise FileFormatError(f"{path}: not a readable NIR file ({type(exc).__name__}: {msg})") from None


def _check_dataset_sizes(path: Path) -> None:
    """Refuse an HDF5 file whose datasets claim more elements than a network at the largest hidden size
    (:func:`neurorate.model.spec.max_array_elements`) or more bytes than the available memory, from the shapes
    HDF5 declares, before ``nir.read`` reads them: a small file can declare a huge dataset (chunks never written
    read as the fill value). A file h5py cannot open is left to ``nir.read``, which says so."""
    import h5py

    from neurorate.model.spec import max_array_elements
    from neurorate.training import _gib, available_bytes

    limit = max_array_elements()
    sizes: list[tuple[str, tuple, int]] = []  # (dataset, shape, bytes)

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.shape is not None:
            shape = tuple(int(d) for d in obj.shape)
            sizes.append((name, shape, math.prod(shape) * int(obj.dtype.itemsize)))

    try:
        with h5py.File(path, "r") as fh:
            fh.visititems(visit)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError):
        return
    for name, shape, _ in sizes:
        if limit >= 0 and math.prod(shape) > limit:
            raise FileFormatError(f"{path}: dataset {name!r} claims {' x '.join(map(str, shape))} elements, more "
                                  f"than the {limit:,} of a network at the largest hidden size "
                                  "(NEURORATE_ALLOW_LARGE=1 lifts the ceiling)")
    total, avail = sum(b for *_, b in sizes), available_bytes()
    if avail is not None and total > avail:
        raise FileFormatError(f"{path}: its datasets claim {_gib(total)} but only {_gib(avail)} of memory is "
                              "available")


def _meta_value(meta: dict, key: str, default=None):
    value = meta.get(key, default)
    if isinstance(value, bytes):
        value = value.decode("utf8")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    return value


def _real(values, what: str) -> np.ndarray:
    """``values`` as a float64 array; strings, complex numbers or objects are a :class:`FileFormatError`."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "biuf":
        raise FileFormatError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64)


def _weights(node) -> tuple[np.ndarray, np.ndarray | None]:
    kind = type(node).__name__
    w = _real(node.weight, f"the {kind} weight")
    bias = getattr(node, "bias", None)
    return w, (None if bias is None else _real(bias, f"the {kind} bias").reshape(-1))


def parse_recurrent_graph(graph) -> dict[str, Any]:
    """Find the recurrent layer of a flat NIR graph: its neuron node and the input, recurrent and readout weights.

    The graph must be one recurrent layer: exactly one LI node (a rate network) or exactly one LIF/CubaLIF node
    (a spiking one, optionally with one LI node after its readout), exactly one Affine/Linear layer from that node
    back to it, one input layer fed by an Input node and one readout layer that reaches an Output node.

    Returns a dict with ``neuron`` (name), ``w_in``, ``w_rec``, ``w_out`` (nodes), ``metadata`` (graph metadata
    merged with the neuron's). Raises :class:`FileFormatError` naming what was found otherwise.
    """
    nir = _nir()
    if not isinstance(graph, nir.NIRGraph):
        raise FileFormatError(f"expected a NIRGraph, got {type(graph).__name__}")
    nodes, edges = graph.nodes, list(graph.edges)
    if any(isinstance(v, nir.NIRGraph) for v in nodes.values()):
        raise FileFormatError("nested NIR graphs are not supported: flatten the graph to one recurrent layer")
    named = lambda keys: f" ({', '.join(map(str, keys))})" if keys else ""  # noqa: E731
    spiking = [k for k, v in nodes.items() if type(v).__name__ in ("LIF", "CubaLIF")]
    leaky = [k for k, v in nodes.items() if type(v).__name__ == "LI"]
    if spiking:  # a LIF layer; an LI node may only be its leaky readout (after the readout layer)
        if len(spiking) != 1:
            raise FileFormatError(f"expected exactly one LIF/CubaLIF node (the recurrent layer), found "
                                  f"{len(spiking)}{named(spiking)}")
        cell = spiking[0]
    else:
        if len(leaky) != 1:
            raise FileFormatError(f"expected exactly one LI node (the recurrent layer), found {len(leaky)}"
                                  f"{named(leaky)}")
        cell = leaky[0]
    into = [s for s, d in edges if d == cell]
    out_of = [d for s, d in edges if s == cell]
    weight_types = (nir.Affine, nir.Linear)
    rec = [k for k in into if k in out_of and isinstance(nodes[k], weight_types)]
    inp = [k for k in into if k not in rec and isinstance(nodes[k], weight_types)]
    readout = [k for k in out_of if k not in rec and isinstance(nodes[k], weight_types)]
    if len(rec) != 1:
        raise FileFormatError(f"expected exactly one recurrent Affine/Linear layer from the {cell!r} node back to it, "
                              f"found {len(rec)}{named(rec)}")
    for role, found in (("input", inp), ("readout", readout)):
        if len(found) != 1:
            raise FileFormatError(f"expected one Affine/Linear {role} layer at the {cell!r} node, found "
                                  f"{len(found)}{named(found)}")
    sources = [s for s, d in edges if d == inp[0] and isinstance(nodes[s], nir.Input)]
    if not sources:
        raise FileFormatError(f"the input layer {inp[0]!r} is not fed by an Input node (found "
                              f"{[s for s, d in edges if d == inp[0]] or 'no edge into it'})")
    after = [d for s, d in edges if s == readout[0]]
    tail = [d for s, d in edges if s in after and type(nodes[s]).__name__ == "LI"] if spiking else []
    extra = [k for k in leaky if k not in after] if spiking else []
    if extra or (spiking and len([k for k in leaky if k in after]) > 1):
        raise FileFormatError(f"expected at most one LI node, after the readout layer {readout[0]!r} of the LIF "
                              f"layer, found {len(leaky)}{named(leaky)}")
    if not any(isinstance(nodes[d], nir.Output) for d in after + tail):
        raise FileFormatError(f"the readout layer {readout[0]!r} does not reach an Output node (it feeds "
                              f"{after or 'nothing'})")
    meta = {**dict(graph.metadata or {}), **dict(nodes[cell].metadata or {})}
    return {"neuron": cell, "w_in": nodes[inp[0]], "w_rec": nodes[rec[0]],
            "w_out": nodes[readout[0]], "metadata": meta, "nodes": nodes, "edges": edges,
            "readout": readout[0]}


def _uniform_alpha(tau: np.ndarray, dt: float, what: str) -> float:
    tau = np.asarray(tau, dtype=np.float64).reshape(-1)
    if tau.size == 0 or not np.all(np.isfinite(tau)) or not np.all(tau > 0):
        raise FileFormatError(f"{what}: time constants tau must be finite and > 0, got {tau.tolist()[:4]}")
    alphas = dt / tau
    if not np.allclose(alphas, alphas[0], rtol=1e-12, atol=0):
        raise FileFormatError(f"{what}: neurorate needs one time constant for all units, got tau in "
                              f"[{np.min(tau):g}, {np.max(tau):g}]")
    return float(alphas[0])


def from_nir(graph_or_path, dt: float | None = None):
    """Import a NIR graph (or file) as a :class:`NetworkSpec` (LI graph) or spiking ``LIFNetwork`` (LIF graph).

    Parameters
    ----------
    graph_or_path : a ``nir.NIRGraph`` or the path of a ``.nir`` file.
    dt : Euler step (seconds) used for ``alpha = dt / tau`` when the graph carries no ``neurorate.alpha``
        (default: ``neurorate.dt`` from the metadata, else :data:`NOMINAL_DT`).

    Notes
    -----
    Foreign LI graphs are accepted: ``r`` is folded into the input and recurrent weights and ``v_leak`` into
    the bias (``tau v' = -v + r (U x + b + W f(v)) + v_leak``); without ``neurorate.*`` metadata the network is
    the linear one NIR describes (activation ``identity``, form A).
    """
    what = "NIR graph"
    if dt is not None and not (float(dt) > 0 and np.isfinite(float(dt))):
        raise NeurorateError(f"dt must be positive and finite (seconds), got {dt}")
    if isinstance(graph_or_path, (str, Path)):
        what = str(graph_or_path)
        graph = read_nir(graph_or_path)
    else:
        graph = graph_or_path
    try:
        parts = parse_recurrent_graph(graph)
    except FileFormatError as exc:
        raise FileFormatError(f"{what}: {exc}") from None
    try:
        return _network_from_parts(parts, dt, what)
    except NeurorateError as exc:
        if isinstance(exc, ImportError) or str(exc).startswith(what):  # a missing extra, or already named
            raise
        raise FileFormatError(f"{what}: {exc}") from None
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        # parameters of the wrong shape, type or size in a foreign or damaged file
        msg = " ".join(str(exc).split())[:200]
        raise FileFormatError(f"{what}: the graph is not a valid neurorate network ({type(exc).__name__}: "
                              f"{msg})") from None


def _number(meta: dict, key: str, what: str) -> float | None:
    """The metadata value ``key`` as a finite float (None when absent); anything else is a :class:`FileFormatError`."""
    value = _meta_value(meta, key)
    if value is None:
        return None
    try:
        if isinstance(value, str):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise FileFormatError(f"{what}: metadata {key} must be a number, got {value!r}") from None
    if not np.isfinite(number):
        raise FileFormatError(f"{what}: metadata {key} must be finite, got {number}")
    return number


def _network_from_parts(parts: dict, dt: float | None, what: str):
    cell = parts["nodes"][parts["neuron"]]
    if type(cell).__name__ != "LI":
        return lif_from_nir(parts, dt=dt, what=what)
    meta = parts["metadata"]
    dt_meta = _number(meta, "neurorate.dt", what)
    step = float(dt if dt is not None else (dt_meta if dt_meta is not None else NOMINAL_DT))
    alpha = _number(meta, "neurorate.alpha", what)
    alpha = alpha if alpha is not None and dt is None else _uniform_alpha(cell.tau, step, what)
    n = np.asarray(cell.tau).size
    r = np.broadcast_to(np.asarray(cell.r, dtype=np.float64).reshape(-1), (n,))
    v_leak = np.broadcast_to(np.asarray(cell.v_leak, dtype=np.float64).reshape(-1), (n,))
    w_in, b = _weights(parts["w_in"])
    w_rec = np.zeros((n, n)) if parts["w_rec"] is None else _weights(parts["w_rec"])[0]
    if parts["w_rec"] is not None and _weights(parts["w_rec"])[1] is not None:
        b = (np.zeros(n) if b is None else b) + _weights(parts["w_rec"])[1]
    w_out, b_out = _weights(parts["w_out"])
    b = np.zeros(n) if b is None else b
    if not (np.all(r == 1) and np.all(v_leak == 0)):
        w_in, w_rec, b = r[:, None] * w_in, r[:, None] * w_rec, r * b + v_leak
    feedback = meta.get("neurorate.feedback")
    init = _meta_value(meta, "neurorate.init")
    if isinstance(init, str):
        try:
            init = json.loads(init)
        except json.JSONDecodeError:
            raise FileFormatError(f"{what}: metadata neurorate.init is not JSON: {init[:60]!r}") from None
        if not isinstance(init, dict):
            raise FileFormatError(f"{what}: metadata neurorate.init must be a JSON object, got {init!r:.60}")
    else:
        init = {}
    nominal = bool(_number(meta, "neurorate.dt_nominal", what)) and dt is None
    try:
        return NetworkSpec(
            w_in=w_in, w_rec=w_rec, w_out=w_out, b=b, b_out=np.zeros(w_out.shape[0]) if b_out is None else b_out,
            alpha=alpha, form=str(_meta_value(meta, "neurorate.form", "A")),
            activation=str(_meta_value(meta, "neurorate.activation", "identity")),
            feedback=None if feedback is None else np.asarray(feedback),
            dt=None if nominal else step, init=init,
        )
    except SpecError as exc:
        raise FileFormatError(f"{what}: the graph is not a valid neurorate network ({exc})") from None


def to_torch(graph, dtype: str = "float64"):
    """An executable ``torch.fx`` module of a rate NIR graph via ``nirtorch.nir_to_torch``, honouring the metadata.

    The LI node runs one Euler step of length ``neurorate.dt`` (``alpha = dt / tau``) in the form given by
    ``neurorate.form`` and applies ``neurorate.activation``; Affine/Linear nodes keep their biases (nirtorch
    2.6's default Affine map does not set the bias). Step it as ``y, state = module(x_t, state)``.
    """
    torch = require("torch", "torch")
    nirtorch = require("nirtorch", "nir", "running NIR graphs in torch")
    nir = _nir()
    from neurorate.model.dynamics import activation, integrate, rate

    tdtype = {"float64": torch.float64, "float32": torch.float32}[dtype]
    meta = {**dict(graph.metadata or {})}
    dt = float(_meta_value(meta, "neurorate.dt", NOMINAL_DT))

    class RateLI(torch.nn.Module):
        """NIR LI node as a rate unit: ``v <- v + (dt/tau)(-v + r I + v_leak)`` plus the neurorate activation
        (the step of :func:`neurorate.model.dynamics.integrate` for the node's form, with alpha = dt / tau)."""

        def __init__(self, node):
            super().__init__()
            m = {**meta, **dict(node.metadata or {})}
            self.form = str(_meta_value(m, "neurorate.form", "A"))
            self.f = activation(str(_meta_value(m, "neurorate.activation", "identity")))[0]
            as_t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=tdtype)
            self.register_buffer("alpha", dt / as_t(node.tau))
            self.register_buffer("r", as_t(node.r))
            self.register_buffer("v_leak", as_t(node.v_leak))

        def forward(self, current, state=None):
            v = torch.zeros_like(current) if state is None else state
            v, _ = integrate(v, self.r * current + self.v_leak, self.alpha, self.form, self.f)
            return rate(v, self.form, self.f), v

    def dense(node):
        w, bias = _weights(node)
        lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=tdtype)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(w))
            if bias is not None:
                lin.bias.copy_(torch.as_tensor(bias))
        return lin

    node_map = {nir.LI: RateLI, nir.Affine: dense, nir.Linear: dense}
    return nirtorch.nir_to_torch(graph, node_map, dtype=tdtype)


# ---------------------------------------------------------------------------------------------------- LIF networks
def lif_to_nir(net, dt: float | None = None):
    """Standard NIR graph of a LIF network (docs/spiking.md)::

        input -> Affine(U, b) -> LIF(tau, r=tau/dt, v_leak=0, v_threshold=theta, v_reset=0) <-> Linear(W)
                                 LIF -> Affine(V, c) -> LI(tau_out, r_out) -> output

    With ``tau = dt/alpha`` and ``r = 1/alpha`` one Euler step is ``v <- beta v + I``; the readout LI has
    ``tau_out = dt/(1-kappa)``, ``r_out = 1/(1-kappa)``, i.e. ``y <- kappa y + V z + c``. NIR's LIF resets to
    ``v_reset``; neurorate resets by subtraction one step later (``neurorate.reset = "subtract"`` in metadata).
    """
    if net.adaptive:
        raise NeurorateError("NIR has no adaptive-threshold (ALIF) neuron; only LIF networks (beta_a = 0) export")
    nir = _nir()
    spec = net.spec
    nominal = dt is None and spec.dt is None
    dt = float(dt if dt is not None else (spec.dt if spec.dt is not None else NOMINAL_DT))
    n, n_out, a_out = spec.n_hidden, spec.n_out, 1.0 - net.kappa
    meta = rate_metadata(spec, dt, nominal)
    for key in ("neurorate.activation", "neurorate.form"):
        meta.pop(key)
    meta.update({"neurorate.neuron": "lif", "neurorate.reset": "subtract", "neurorate.kappa": float(net.kappa),
                 "neurorate.gamma": float(net.gamma), "neurorate.threshold": float(net.threshold)})
    graph_meta = graph_metadata(spec, meta)
    nodes = {
        **input_nodes(nir, spec),
        "lif": nir.LIF(tau=np.full(n, dt / spec.alpha), r=np.full(n, 1.0 / spec.alpha), v_leak=np.zeros(n),
                       v_threshold=np.full(n, float(net.threshold)), v_reset=np.zeros(n), metadata=meta),
        "w_rec": nir.Linear(weight=spec.w_rec.copy()),
        "w_out": nir.Affine(weight=spec.w_out.copy(), bias=spec.b_out.copy()),
        "readout": nir.LI(tau=np.full(n_out, dt / a_out), r=np.full(n_out, 1.0 / a_out), v_leak=np.zeros(n_out)),
        "output": nir.Output(output_type={"output": np.array([n_out])}),
    }
    edges = [("input", "w_in"), ("w_in", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "w_out"),
             ("w_out", "readout"), ("readout", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph_meta)


def lif_from_nir(parts: dict, dt: float | None = None, what: str = "NIR graph"):
    """A :class:`LIFNetwork` from a parsed LIF graph (see :func:`neurorate.io.nir.parse_recurrent_graph`).

    ``r`` and ``v_leak`` are folded into the weights (``v <- beta v + alpha (r I + v_leak)``); the readout decay
    comes from ``neurorate.kappa`` or an LI node after the readout (none: ``kappa = 0``).
    """
    from neurorate.model.spiking import LIFNetwork

    cell, meta = parts["nodes"][parts["neuron"]], parts["metadata"]
    if type(cell).__name__ != "LIF":
        raise FileFormatError(f"{what}: only LIF neurons are imported as spiking networks, got {type(cell).__name__}")
    dt_meta = _meta_value(meta, "neurorate.dt")
    step = float(dt if dt is not None else (dt_meta if dt_meta is not None else NOMINAL_DT))
    alpha = _meta_value(meta, "neurorate.alpha")
    alpha = float(alpha) if alpha is not None and dt is None else _uniform_alpha(cell.tau, step, what)
    theta = np.unique(np.asarray(cell.v_threshold, dtype=np.float64))
    if theta.size != 1:
        raise FileFormatError(f"{what}: neurorate needs one threshold for all units")
    n = np.asarray(cell.tau).size
    gain = alpha * np.broadcast_to(np.asarray(cell.r, dtype=np.float64).reshape(-1), (n,))
    w_in, b = _weights(parts["w_in"])
    b = np.zeros(n) if b is None else b
    w_rec = np.zeros((n, n)) if parts["w_rec"] is None else _weights(parts["w_rec"])[0]
    if not np.all(gain == 1.0) or np.any(np.asarray(cell.v_leak) != 0):
        v_leak = np.broadcast_to(np.asarray(cell.v_leak, dtype=np.float64).reshape(-1), (n,))
        w_in, w_rec, b = gain[:, None] * w_in, gain[:, None] * w_rec, gain * b + alpha * v_leak
    w_out, b_out = _weights(parts["w_out"])
    kappa = _meta_value(meta, "neurorate.kappa")
    if kappa is None:
        after = [d for s, d in parts["edges"] if s == parts["readout"]]
        li = [parts["nodes"][d] for d in after if type(parts["nodes"][d]).__name__ == "LI"]
        kappa = 1.0 - _uniform_alpha(li[0].tau, step, what) if li else 0.0
    feedback, init = meta.get("neurorate.feedback"), _meta_value(meta, "neurorate.init")
    nominal = bool(_meta_value(meta, "neurorate.dt_nominal", 0)) and dt is None
    spec = NetworkSpec(w_in=w_in, w_rec=w_rec, w_out=w_out, b=b,
                       b_out=np.zeros(w_out.shape[0]) if b_out is None else b_out, alpha=alpha,
                       feedback=None if feedback is None else np.asarray(feedback, dtype=np.float64),
                       dt=None if nominal else step, init=json.loads(init) if isinstance(init, str) else {})
    return LIFNetwork(spec, threshold=float(theta[0]), kappa=float(kappa),
                      gamma=float(_meta_value(meta, "neurorate.gamma", 0.3)))
