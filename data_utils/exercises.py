"""Exercises that check themselves (every notebook's Exercises section, 00-10).

Each ``check_<name>(fn)`` calls the learner's function on cases it generates (seeded), compares
what comes back with the reference (``solution_<name>``, or the package function the lesson
teaches) and returns one sentence: ``"Not done yet: ..."`` while the stub still raises
NotImplementedError, what is wrong (wrong type or shape, not normalised, differs from the
reference on this input by this much), or ``"Correct: ..."``. A check never raises: an
exception in the learner's code is named in the sentence. The notebooks print it:
``print(check_iid_split(my_iid_split))``. The solutions are in ``solutions/`` (one notebook per
lesson). TFF is imported only inside the two checks that need it (04, 09), and only when this
Python has it.

    >>> check_weighted_average(solution_weighted_average).startswith("Correct")
    True
    >>> def stub(weight_lists, counts):
    ...     raise NotImplementedError
    >>> check_weighted_average(stub).startswith("Not done yet")
    True
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np

from .aggregation import weighted_average
from .metrics import classification_metrics
from .report import per_client_gains
from .robust import trimmed_mean
from .workers import check_addresses

TOLERANCE = 1e-5  # relative, on float64 (learners may use float32)


class _Verdict(Exception):
    """The sentence a check returns, raised from deep inside it."""


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _call(fn: Callable, name: str, *args, **kwargs):
    """``fn(*args)``; the stub and the learner's errors become verdicts."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _Verdict(f"Not done yet: {name} still raises NotImplementedError; replace that line "
                       "with your code and run this cell again.") from None
    except Exception as e:  # the learner's bug, named, never a traceback
        shown = ", ".join([_short(a, 40) for a in args] + [f"{k}={_short(v, 40)}" for k, v in kwargs.items()])
        raise _Verdict(f"Not yet right: {name}({shown}) raised {type(e).__name__}: {e}") from None


def _checker(name: str):
    """Turn a check body that raises :class:`_Verdict` into one that returns the sentence."""
    def wrap(body):
        @functools.wraps(body)
        def check(fn) -> str:
            if not callable(fn):
                return f"Not yet right: pass your function itself ({name}), not {_short(fn)}."
            try:
                return body(fn)
            except _Verdict as v:
                return str(v)
            except Exception as e:  # what came back could not even be compared
                return (f"Not yet right: what {name} returned could not be checked "
                        f"({type(e).__name__}: {e}).")
        return check
    return wrap


def _array(value, name: str, what: str) -> np.ndarray:
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise _Verdict(f"Not yet right: {name} should return {what}, got {_short(value)} ({e}).") from None
    return out


def _same_arrays(got, want, name: str, case: str, what: str = "layer") -> None:
    """Compare a list of arrays with the reference: count, shapes, values."""
    if isinstance(got, np.ndarray) and len(want) > 1 and got.dtype != object:
        raise _Verdict(f"Not yet right: {name} returned one array of shape {got.shape}; it should return "
                       f"a list of {len(want)} arrays, one per {what}, shaped like the input's.")
    try:
        got = list(got)
    except TypeError:
        raise _Verdict(f"Not yet right: {name} should return a list of arrays, got {_short(got)}.") from None
    if len(got) != len(want):
        raise _Verdict(f"Not yet right: {name} returned {len(got)} arrays on {case}, expected {len(want)} "
                       f"(one per {what}).")
    for j, (g, w) in enumerate(zip(got, want)):
        g = _array(g, name, f"arrays shaped like the input's {what}s")
        if g.shape != np.shape(w):
            raise _Verdict(f"Not yet right: {what} {j} has shape {g.shape} on {case}; expected {np.shape(w)} "
                           "(the input's shape).")
        gap = float(np.max(np.abs(g - w))) if g.size else 0.0
        if not np.isfinite(gap) or gap > TOLERANCE * (1.0 + float(np.max(np.abs(w)))):
            raise _Verdict(f"Not yet right: {what} {j} differs from the reference on {case} by up to "
                           f"{gap:.3g}.")


# ---- 00: which clients take part in a round -------------------------------------------------------
def solution_sample_clients(num_clients, per_round, seed):
    """Notebook 00's coding exercise, solved (the reference its check compares with)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(num_clients, size=per_round, replace=False))


@_checker("my_sample_clients")
def check_sample_clients(fn) -> str:
    """00: ``fn(num_clients, per_round, seed)`` -> the ids of ``per_round`` distinct clients in
    ``range(num_clients)``, drawn at random and the same for the same seed."""
    name = "my_sample_clients"
    for n, m in ((10, 3), (100, 10), (5, 5)):
        ids = _array(_call(fn, name, n, m, 0), name, "an array of client ids").reshape(-1)
        case = f"num_clients={n}, per_round={m}"
        if ids.size != m:
            raise _Verdict(f"Not yet right: with {case} it returned {ids.size} ids; expected {m}.")
        if np.any(ids != np.round(ids)) or ids.min() < 0 or ids.max() >= n:
            raise _Verdict(f"Not yet right: with {case} it returned {ids.tolist()}; every id must be a whole "
                           f"number from 0 to {n - 1}.")
        if len(set(ids.tolist())) != m:
            raise _Verdict(f"Not yet right: with {case} it returned {ids.tolist()}: a client appears twice "
                           "(draw without replacement).")
        again = _array(_call(fn, name, n, m, 0), name, "an array of client ids").reshape(-1)
        if sorted(again.tolist()) != sorted(ids.tolist()):
            raise _Verdict(f"Not yet right: two calls with {case} and seed 0 gave different clients; the seed "
                           "must fix the draw (use np.random.default_rng(seed)).")
    draws = {tuple(sorted(_array(_call(fn, name, 100, 10, s), name, "client ids").reshape(-1).tolist()))
             for s in range(5)}
    if len(draws) == 1:
        raise _Verdict("Not yet right: seeds 0 to 4 all gave the same 10 of 100 clients; the draw must be "
                       "random (a different seed, different clients).")
    return "Correct: distinct clients in range, fixed by the seed, different for different seeds."


# ---- 01: an IID partitioner -----------------------------------------------------------------------
def solution_iid_split(labels, num_clients, seed):
    """Notebook 01's coding exercise, solved (the reference its check compares with)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    return [np.sort(part) for part in np.array_split(order, num_clients)]


@_checker("my_iid_split")
def check_iid_split(fn) -> str:
    """01: ``fn(labels, num_clients, seed)`` -> one index array per client; together they hold
    every example once, sizes differ by at most one, drawn at random and fixed by the seed."""
    name = "my_iid_split"
    labels = np.random.default_rng(7).integers(0, 10, size=1000)
    for k in (10, 7):
        parts = _call(fn, name, labels, k, 0)
        try:
            parts = [np.asarray(p).reshape(-1) for p in parts]
        except TypeError:
            raise _Verdict(f"Not yet right: {name} should return a list of index arrays, got {_short(parts)}.")
        case = f"1000 labels and {k} clients"
        if len(parts) != k:
            raise _Verdict(f"Not yet right: with {case} it returned {len(parts)} clients; expected {k}.")
        everything = np.concatenate(parts).astype(np.int64)
        counts = np.bincount(everything, minlength=len(labels)) if everything.size and everything.min() >= 0 \
            else None
        if counts is None or len(counts) != len(labels):
            raise _Verdict(f"Not yet right: with {case} some indices fall outside 0..999.")
        if np.any(counts > 1):
            raise _Verdict(f"Not yet right: with {case} index {int(np.argmax(counts > 1))} is given to "
                           f"{int(counts.max())} clients; each example belongs to exactly one client.")
        if np.any(counts == 0):
            raise _Verdict(f"Not yet right: with {case}, {int((counts == 0).sum())} examples belong to no "
                           "client; an IID split uses every example.")
        sizes = [len(p) for p in parts]
        if max(sizes) - min(sizes) > 1:
            raise _Verdict(f"Not yet right: with {case} the client sizes range from {min(sizes)} to "
                           f"{max(sizes)}; an IID split gives (almost) equal sizes.")
        if all(np.array_equal(np.sort(p), np.arange(p.min(), p.max() + 1)) for p in parts if len(p)):
            raise _Verdict(f"Not yet right: with {case} every client holds a contiguous block of indices "
                           "(no shuffling); an IID split draws each client's examples at random.")
    a, b = (_call(fn, name, labels, 10, s) for s in (0, 0))
    if any(not np.array_equal(np.sort(x), np.sort(y)) for x, y in zip(a, b)):
        raise _Verdict("Not yet right: two calls with seed 0 gave different splits; the seed must fix them.")
    c = _call(fn, name, labels, 10, 1)
    if all(np.array_equal(np.sort(x), np.sort(y)) for x, y in zip(a, c)):
        raise _Verdict("Not yet right: seeds 0 and 1 gave the same split; the seed should change the draw.")
    return "Correct: every example once, sizes within one, shuffled, fixed by the seed."


# ---- 02: macro-F1 from a confusion matrix ---------------------------------------------------------
def solution_macro_f1(cm):
    """Notebook 02's coding exercise, solved (the reference its check compares with)."""
    cm = np.asarray(cm, dtype=np.float64)
    tp, predicted, actual = np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                   where=precision + recall > 0)
    present = (predicted > 0) | (actual > 0)
    return float(f1[present].mean())


def _f1_cases():
    rng = np.random.default_rng(2)
    cases = []
    for k, n, skill, absent in ((10, 500, 0.7, None), (4, 60, 0.3, None), (6, 200, 0.8, 5)):
        y = rng.integers(0, k - (absent is not None), size=n)
        pred = np.where(rng.random(n) < skill, y, rng.integers(0, k - (absent is not None), size=n))
        cm = np.zeros((k, k), dtype=np.int64)
        np.add.at(cm, (y, pred), 1)
        cases.append((cm, classification_metrics(y, pred, k)["f1"],
                      f"a {k}x{k} confusion matrix of {n} examples" + (f" (class {absent} absent)" if absent else "")))
    return cases


@_checker("my_macro_f1")
def check_macro_f1(fn) -> str:
    """02: ``fn(cm)`` -> macro-averaged F1 from a confusion matrix (rows true, columns predicted),
    averaged over the classes that occur; the reference is :func:`data_utils.metrics.classification_metrics`."""
    name = "my_macro_f1"
    for cm, want, case in _f1_cases():
        got = _array(_call(fn, name, cm.copy()), name, "one number")
        if got.size != 1:
            raise _Verdict(f"Not yet right: {name} should return one number, got shape {got.shape}.")
        got = float(got.reshape(-1)[0])
        if abs(got - want) > 1e-6:
            hint = ""
            if abs(got - np.trace(cm) / cm.sum()) < 1e-9:
                hint = " (that is the accuracy, not the mean of the per-class F1 scores)"
            elif cm.sum(axis=0).min() == 0 or cm.sum(axis=1).min() == 0:
                hint = " (a class absent from both labels and predictions has nothing to score: leave it out)"
            raise _Verdict(f"Not yet right: on {case} it gives {got:.4f}, the reference {want:.4f} "
                           f"(off by {abs(got - want):.4f}){hint}.")
    return "Correct: equal to data_utils.metrics.classification_metrics on 3 confusion matrices."


# ---- 03: the example-weighted average of weight lists ---------------------------------------------
def solution_weighted_average(weight_lists, counts):
    """Notebook 03's coding exercise, solved (the reference its check compares with)."""
    total = float(sum(counts))
    return [sum(n / total * ws[j] for ws, n in zip(weight_lists, counts))
            for j in range(len(weight_lists[0]))]


@_checker("my_weighted_average")
def check_weighted_average(fn) -> str:
    """03: ``fn(weight_lists, counts)`` -> layer j is sum_i n_i w_i[j] / sum_i n_i; the reference
    is :func:`data_utils.aggregation.weighted_average`."""
    name = "my_weighted_average"
    rng = np.random.default_rng(3)
    shapes = [(3, 4), (4,), (2, 2, 3)]
    for clients in (3, 5):
        lists = [[rng.normal(size=s) for s in shapes] for _ in range(clients)]
        counts = rng.integers(10, 500, size=clients).tolist()
        want = weighted_average(lists, counts)
        got = _call(fn, name, [list(ws) for ws in lists], list(counts))
        case = f"{clients} clients with counts {counts}"
        try:
            _same_arrays(got, want, name, case)
        except _Verdict as v:
            got0 = np.asarray(list(got)[0], dtype=np.float64) if len(list(got)) else None
            summed = sum(n * ws[0] for ws, n in zip(lists, counts))
            if got0 is not None and got0.shape == summed.shape and np.allclose(got0, summed):
                raise _Verdict(f"Not yet right: on {case} the result is not normalised: divide by the total "
                               f"count ({sum(counts)}).") from None
            plain = np.mean([ws[0] for ws in lists], axis=0)
            if got0 is not None and got0.shape == plain.shape and np.allclose(got0, plain):
                raise _Verdict(f"Not yet right: on {case} it is the plain mean; weight each client by its "
                               "example count.") from None
            raise v from None
    return "Correct: equal to data_utils.aggregation.weighted_average, layer by layer."


# ---- 04: a TFF process with server momentum -------------------------------------------------------
def _tff_or_none():
    """TFF when this Python can import it (the course's Python 3.11), else None."""
    try:
        from .tff_fedavg import import_tff
        return import_tff()
    except Exception:
        return None


def _stub_first(fn: Callable, name: str, *args) -> None:
    """Call ``fn`` once with placeholder arguments: only the untouched stub's NotImplementedError
    counts (a written function may fail on the placeholders; the real check calls it again)."""
    try:
        fn(*args)
    except NotImplementedError:
        _call(fn, name, *args)
    except Exception:
        pass


NEEDS_TFF = ("Skipped: this check needs TensorFlow Federated in this Python (the course's Python 3.11 "
             "runtime or .venv); your function is written, run the check there.")


def solution_momentum_process(model_fn, client_lr, server_lr, momentum):
    """Notebook 04's coding exercise, solved (the reference its check compares with)."""
    import tensorflow_federated as tff

    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=client_lr),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=server_lr, momentum=momentum))


def _tiny_model_fn(tff):
    import tensorflow as tf

    spec = (tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.int32))

    def model_fn():
        keras_model = tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(3,)), tf.keras.layers.Dense(2)])
        return tff.learning.models.from_keras_model(
            keras_model, input_spec=spec, loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model_fn


def _flat_hparams(tree, prefix="") -> dict:
    out = {}
    for key, value in (tree.items() if hasattr(tree, "items") else []):
        if hasattr(value, "items"):
            out.update(_flat_hparams(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = float(np.asarray(value))
    return out


@_checker("my_momentum_process")
def check_momentum_process(fn) -> str:
    """04: ``fn(model_fn, client_lr, server_lr, momentum)`` -> TFF's examples-weighted FedAvg
    with SGD on the clients and SGD with momentum on the server. Cheap: builds it for a 3-input
    linear model and compares its type and hyperparameters with the reference (no training)."""
    name = "my_momentum_process"
    _stub_first(fn, name, None, 0.05, 1.0, 0.9)  # the stub says "Not done yet" before TFF is imported
    tff = _tff_or_none()
    if tff is None:
        return NEEDS_TFF
    model_fn = _tiny_model_fn(tff)
    args = (0.05, 0.7, 0.9)
    got = _call(fn, name, model_fn, *args)
    if not isinstance(got, tff.learning.templates.LearningProcess):
        raise _Verdict(f"Not yet right: {name} should return a tff.learning.templates.LearningProcess "
                       f"(from tff.learning.algorithms.build_weighted_fed_avg), got {type(got).__name__}.")
    want = solution_momentum_process(model_fn, *args)
    got_h, want_h = _flat_hparams(got.get_hparams(got.initialize())), _flat_hparams(want.get_hparams(want.initialize()))
    if "finalizer/momentum" not in got_h:
        raise _Verdict("Not yet right: the server optimizer has no momentum; pass server_optimizer_fn="
                       "tff.learning.optimizers.build_sgdm(learning_rate=server_lr, momentum=momentum).")
    for key in sorted(want_h):
        if key not in got_h or abs(got_h[key] - want_h[key]) > 1e-6:
            raise _Verdict(f"Not yet right: called with client_lr, server_lr, momentum = {args}, its {key} is "
                           f"{got_h.get(key)}, expected {want_h[key]}.")
    if str(got.next.type_signature) != str(want.next.type_signature):
        raise _Verdict("Not yet right: its next() has another type than examples-weighted FedAvg's; use "
                       "build_weighted_fed_avg (clients weighted by their example counts).")
    return "Correct: examples-weighted FedAvg, client SGD, server SGD with momentum, the rates you were given."


# ---- 05: the per-client gain table ----------------------------------------------------------------
def solution_client_gains(federated, local):
    """Notebook 05's coding exercise, solved (the reference its check compares with)."""
    gains = [None if f is None or l is None else f - l for f, l in zip(federated, local)]
    gainers = [c for c, g in enumerate(gains) if g is not None and g > 0]
    losers = [c for c, g in enumerate(gains) if g is not None and g < 0]
    return gains, gainers, losers


@_checker("my_client_gains")
def check_client_gains(fn) -> str:
    """05: ``fn(federated, local)`` -> (gains, gainers, losers): each client's federated minus
    local accuracy (None where a client has no score), the clients that gain, those that lose;
    the reference is :func:`data_utils.report.per_client_gains`."""
    name = "my_client_gains"
    rng = np.random.default_rng(5)
    for missing in ((), (3,)):
        fed = [round(float(v), 3) for v in rng.uniform(0.5, 0.9, size=8)]
        loc = [round(float(v), 3) for v in rng.uniform(0.4, 0.95, size=8)]
        for c in missing:
            fed[c] = loc[c] = None
        ref = per_client_gains(fed, loc)
        case = "8 clients" + (f" (client {missing[0]} has no local test split)" if missing else "")
        out = _call(fn, name, list(fed), list(loc))
        if not isinstance(out, (tuple, list)) or len(out) != 3:
            raise _Verdict(f"Not yet right: {name} should return three things (gains, gainers, losers), "
                           f"got {_short(out)}.")
        gains, gainers, losers = out
        gains = list(gains)
        if len(gains) != 8:
            raise _Verdict(f"Not yet right: on {case} it returned {len(gains)} gains; expected one per client (8).")
        for c, (g, w) in enumerate(zip(gains, ref["gains"])):
            if (g is None) != (w is None):
                raise _Verdict(f"Not yet right: on {case}, client {c}'s gain is {g!r}, expected {w!r} "
                               "(None only for a client with no score).")
            if w is not None and abs(float(g) - w) > 1e-9:
                sign = " (the sign is flipped: federated minus local)" if abs(float(g) + w) < 1e-9 else ""
                raise _Verdict(f"Not yet right: on {case}, client {c}'s gain is {float(g):.3f}, expected "
                               f"{w:.3f}{sign}.")
        for what, got, want in (("gainers", gainers, ref["gainers"]), ("losers", losers, ref["losers"])):
            if sorted(int(c) for c in got) != want:
                raise _Verdict(f"Not yet right: on {case} the {what} are {sorted(got)}, expected {want}.")
    return "Correct: equal to data_utils.report.per_client_gains (gains, gainers, losers)."


# ---- 06: pairwise masks that cancel ---------------------------------------------------------------
def solution_pairwise_masks(num_clients, length, seed):
    """Notebook 06's coding exercise, solved (the reference its check compares with)."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((num_clients, length))
    for i in range(num_clients):
        for j in range(i + 1, num_clients):
            r = rng.normal(scale=100.0, size=length)   # the secret client i and client j share
            masks[i] += r
            masks[j] -= r
    return masks


@_checker("my_pairwise_masks")
def check_pairwise_masks(fn) -> str:
    """06: ``fn(num_clients, length, seed)`` -> an array (num_clients, length) of masks: each
    client's mask hides its update (large and random, different for every client), and all
    masks add up to zero, so the server's sum of masked updates is the sum of the updates."""
    name = "my_pairwise_masks"
    for n, d in ((3, 5), (10, 50)):
        case = f"{n} clients, vectors of {d}"
        masks = _array(_call(fn, name, n, d, 0), name, f"an array of shape ({n}, {d})")
        if masks.shape != (n, d):
            raise _Verdict(f"Not yet right: with {case} the masks have shape {masks.shape}; expected ({n}, {d}), "
                           "one row per client.")
        scale = float(np.abs(masks).max())
        if scale == 0:
            raise _Verdict(f"Not yet right: with {case} every mask is zero: they cancel, but hide nothing.")
        quiet = [i for i in range(n) if np.abs(masks[i]).max() < 1e-3 * scale]
        if quiet:
            raise _Verdict(f"Not yet right: with {case} client {quiet[0]}'s mask is (almost) zero, so its update "
                           "reaches the server in the clear.")
        total = float(np.abs(masks.sum(axis=0)).max())
        if total > 1e-9 * scale * n:
            raise _Verdict(f"Not yet right: with {case} the masks do not cancel: their sum is off zero by up to "
                           f"{total:.3g} (masks up to {scale:.3g}); give client j minus what client i adds.")
        if n > 2 and np.linalg.matrix_rank(masks, tol=1e-6 * scale) < min(n - 1, d):
            raise _Verdict(f"Not yet right: with {case} the masks are multiples of each other; the server could "
                           "undo them. Draw a fresh random vector for every pair of clients.")
    a, b = (_array(_call(fn, name, 4, 6, s), name, "masks") for s in (0, 0))
    if not np.array_equal(a, b):
        raise _Verdict("Not yet right: two calls with seed 0 gave different masks; the seed must fix them "
                       "(the pair's shared secret).")
    return "Correct: one random mask per client, and together they cancel."


# ---- 07: the trimmed mean -------------------------------------------------------------------------
def solution_trimmed_mean(updates, k):
    """Notebook 07's coding exercise, solved (the reference its check compares with)."""
    values = np.sort(np.asarray(updates, dtype=np.float64), axis=0)   # each coordinate on its own
    return values[k:len(values) - k].mean(axis=0)


@_checker("my_trimmed_mean")
def check_trimmed_mean(fn) -> str:
    """07: ``fn(updates, k)`` -> for each coordinate, drop the k largest and k smallest of the
    clients' values and average the rest; ``updates`` is (clients, coordinates). The reference is
    :func:`data_utils.robust.trimmed_mean` (with ``trim_fraction = k / clients``)."""
    name = "my_trimmed_mean"
    rng = np.random.default_rng(7)
    for n, d, k in ((5, 4, 1), (10, 30, 2), (9, 6, 0)):
        updates = rng.normal(size=(n, d))
        updates[0] += 1000.0   # an attacker
        updates[1, ::2] -= 500.0
        want = trimmed_mean([[u] for u in updates], trim_fraction=k / n)[0]
        got = _array(_call(fn, name, updates.copy(), k), name, f"an array of {d} values")
        case = f"{n} clients x {d} coordinates, k={k}"
        if got.shape != (d,):
            raise _Verdict(f"Not yet right: on {case} the result has shape {got.shape}; expected ({d},), one value "
                           "per coordinate (sort along the clients' axis, 0).")
        gap = float(np.abs(got - want).max())
        if gap > 1e-6:
            hint = ""
            if k and np.allclose(got, updates.mean(axis=0)):
                hint = " (that is the plain mean: nothing was trimmed)"
            raise _Verdict(f"Not yet right: on {case} it differs from the reference by up to {gap:.3g}{hint}.")
    return "Correct: equal to data_utils.robust.trimmed_mean, coordinate by coordinate."


# ---- 08: FedProx's proximal term ------------------------------------------------------------------
def solution_proximal_gradients(grads, weights, global_weights, mu):
    """Notebook 08's coding exercise, solved (the reference its check compares with)."""
    return [g + mu * (w - w0) for g, w, w0 in zip(grads, weights, global_weights)]


@_checker("my_proximal_gradients")
def check_proximal_gradients(fn) -> str:
    """08: ``fn(grads, weights, global_weights, mu)`` -> the gradient of loss + mu/2 ||w - w_global||^2,
    layer by layer; the reference is :func:`data_utils.remedies.proximal_gradients`."""
    from .remedies import proximal_gradients

    name = "my_proximal_gradients"
    rng = np.random.default_rng(8)
    shapes = [(5, 3), (3,)]
    for mu in (0.01, 1.0):
        g, w, w0 = ([rng.normal(size=s) for s in shapes] for _ in range(3))
        want = proximal_gradients(g, w, w0, mu)
        got = _call(fn, name, [a.copy() for a in g], [a.copy() for a in w], [a.copy() for a in w0], mu)
        case = f"random layers with mu={mu}"
        try:
            _same_arrays(got, want, name, case)
        except _Verdict as v:
            flipped = [a - mu * (b - c) for a, b, c in zip(g, w, w0)]
            got_list = list(got) if not isinstance(got, np.ndarray) else []
            if len(got_list) == len(flipped) and all(np.shape(x) == y.shape and np.allclose(x, y)
                                                     for x, y in zip(got_list, flipped)):
                raise _Verdict(f"Not yet right: on {case} the proximal term has the wrong sign: it must pull the "
                               "weights back towards the global model (+ mu * (w - w_global)).") from None
            raise v from None
    return "Correct: equal to data_utils.remedies.proximal_gradients, layer by layer."


# ---- 09: a federated computation from federated_map and federated_mean ----------------------------
MEAN_SQUARE_TYPE = "({float32}@CLIENTS -> float32@SERVER)"


def solution_mean_square():
    """Notebook 09's coding exercise, solved (the reference its check compares with)."""
    import tensorflow_federated as tff

    @tff.tensorflow.computation(np.float32)
    def square(x):
        return x * x

    @tff.federated_computation(tff.FederatedType(np.float32, tff.CLIENTS))
    def mean_square(readings):
        return tff.federated_mean(tff.federated_map(square, readings))

    return mean_square


@_checker("my_mean_square")
def check_mean_square(fn) -> str:
    """09: ``fn()`` -> a federated computation of type ``({float32}@CLIENTS -> float32@SERVER)``
    that returns the mean of the clients' squared readings."""
    name = "my_mean_square"
    _stub_first(fn, name)
    tff = _tff_or_none()
    if tff is None:
        return NEEDS_TFF
    comp = _call(fn, name)
    signature = str(getattr(comp, "type_signature", None))
    if signature != MEAN_SQUARE_TYPE:
        raise _Verdict(f"Not yet right: its type signature is {signature}, expected {MEAN_SQUARE_TYPE} (readings "
                       "placed at CLIENTS, one float32 result at SERVER).")
    rng = np.random.default_rng(9)
    for readings in ([1.0, 2.0, 3.0], [float(v) for v in np.round(rng.normal(size=5), 3)]):
        got = float(np.asarray(_call(comp, "your computation", readings)))
        want = float(np.mean(np.square(readings)))
        if abs(got - want) > 1e-4 * (1 + abs(want)):
            hint = " (that is the mean, not the mean of the squares)" if abs(got - np.mean(readings)) < 1e-4 else ""
            raise _Verdict(f"Not yet right: on {readings} it returns {got:.4f}, expected {want:.4f}{hint}.")
    return "Correct: ({float32}@CLIENTS -> float32@SERVER), the mean of the squares."


# ---- 10: a worker address list --------------------------------------------------------------------
def solution_addresses(hosts, port):
    """Notebook 10's coding exercise, solved (the reference its check compares with)."""
    return [f"{host}:{port}" for host in hosts]


@_checker("addresses")
def check_addresses_fn(fn) -> str:
    """10: ``fn(hosts, port)`` -> ``["host:port", ...]`` in the hosts' order, which
    :func:`data_utils.workers.check_addresses` accepts."""
    name = "addresses"
    for hosts, port in ((["127.0.0.1"], 8001), (["10.0.0.5", "10.0.0.6", "gpu-box"], 9000)):
        got = _call(fn, name, list(hosts), port)
        want = solution_addresses(hosts, port)
        try:
            accepted = check_addresses(got)
        except ValueError as e:
            raise _Verdict(f"Not yet right: for {hosts} and port {port} it returned {_short(got)}, which "
                           f"data_utils.workers.check_addresses refuses: {e}") from None
        if accepted != want:
            raise _Verdict(f"Not yet right: for {hosts} and port {port} it returned {accepted}, expected {want}.")
    return "Correct: one 'host:port' per host, in order, accepted by data_utils.workers.check_addresses."


CHECKS = {  # notebook -> (stub name, check)
    "00": ("my_sample_clients", check_sample_clients), "01": ("my_iid_split", check_iid_split),
    "02": ("my_macro_f1", check_macro_f1), "03": ("my_weighted_average", check_weighted_average),
    "04": ("my_momentum_process", check_momentum_process), "05": ("my_client_gains", check_client_gains),
    "06": ("my_pairwise_masks", check_pairwise_masks), "07": ("my_trimmed_mean", check_trimmed_mean),
    "08": ("my_proximal_gradients", check_proximal_gradients), "09": ("my_mean_square", check_mean_square),
    "10": ("addresses", check_addresses_fn),
}
SOLUTIONS = {"00": solution_sample_clients, "01": solution_iid_split, "02": solution_macro_f1,
             "03": solution_weighted_average, "04": solution_momentum_process, "05": solution_client_gains,
             "06": solution_pairwise_masks, "07": solution_trimmed_mean, "08": solution_proximal_gradients,
             "09": solution_mean_square, "10": solution_addresses}
