"""Notebook 04's FedAvg runs, reused by a later notebook or trained again (notebook 05).

Notebook 04 saves its two FedAvg runs (``build/artifacts/fedavg_manual.npz`` and
``fedavg_tff.npz``) with every parameter that shaped them. :func:`get_manual_fedavg` and
:func:`get_tff_fedavg` return the saved run when it was made with the parameters asked for, and
train it now otherwise: the hand-written FedAvg anywhere, TFF's only where TensorFlow Federated
can run (else the status says why, and the notebook's row says *not available*). Each returns
``(final weights, round rows, status)``, the status being ``"reused"``, ``"trained"`` or
``"not available: ..."``.

    weights, history, status = get_manual_fedavg(exp, cfg, data, partition, init)
    weights, history, status = get_tff_fedavg({"NUM_CLIENTS": 10, "ROUNDS": 10, "SMOKE": True})
"""
from __future__ import annotations

from typing import Callable, Mapping


def get_manual_fedavg(exp, cfg, data, partition, init, log: Callable[[str], None] = print,
                      progress: bool = True, name: str = "fedavg_manual") -> tuple[list, list[dict], str]:
    """The hand-written FedAvg run (:func:`data_utils.fedavg.run_fedavg`) for experiment ``exp``
    with settings ``cfg``: the one notebook 04 saved (artifact ``name``) when both match, else
    trained now from ``init`` and saved. Returns (final weights, round rows, status)."""
    from .experiment import client_arrays
    from .fedavg import load_fedavg_run, run_fedavg, save_fedavg_run
    from .models import WeightsEvaluator
    from .training import client_trainer

    run, status = load_fedavg_run(name, exp.as_dict(), cfg)
    if run is not None:
        log(f"{name}: reused the saved run ({len(run['history'])} rounds)")
        return run["weights"], run["history"], "reused"
    log(f"{name}: {status}; training it now")
    evaluate = WeightsEvaluator(exp.model, data.input_shape, data.num_classes, data.x_test, data.y_test)
    trainer = client_trainer(exp.model, data.input_shape, data.num_classes, cfg.client_lr, cfg.client_momentum)
    weights, history = run_fedavg(trainer, init, client_arrays(exp, data, partition), cfg,
                                  evaluate=evaluate, progress=progress, desc=name)
    save_fedavg_run(name, exp.as_dict(), cfg, weights, history)
    return weights, [r.as_dict() for r in history], "trained"


def _tff_missing_reason() -> str:
    import sys

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return (f"not available: TensorFlow Federated cannot run in this runtime (Python {version}"
            + ("" if sys.version_info[:2] == (3, 11) else "; TFF 0.87 needs Python 3.11 and Keras 2")
            + ") and no saved run of notebook 04 matches these parameters. Run notebook 04 with the "
            "same parameters (it can use the Python 3.11 side environment), then this notebook again.")


def get_tff_fedavg(job_params: Mapping, log: Callable[[str], None] = print,
                   progress: bool = True) -> tuple[list | None, list | None, str]:
    """TFF's FedAvg for notebook 04's parameters ``job_params`` (see
    :func:`data_utils.experiment.parse_params`): the run notebook 04 saved (artifact ``fedavg_tff``)
    when it was made with these parameters; else trained now in this process with
    :func:`data_utils.jobs.tff_fedavg_job` when TFF can run here (Python 3.11 stack); else
    (weights, history) are None and the status says why (also when training fails here, e.g. a
    dataset too large for TFF's serialization). Returns (weights, rows, status)."""
    from .experiment import parse_params
    from .fedavg import load_fedavg_run, save_fedavg_run
    from .sidecar import tff_available_here
    from .tff_fedavg import JOB_OPTIONS

    exp, cfg, _ = parse_params(dict(job_params), JOB_OPTIONS)
    run, status = load_fedavg_run("fedavg_tff", exp.as_dict(), cfg)
    if run is not None:
        made_by = run["extra"].get("made_by", "04_tff_fedavg")
        log(f"fedavg_tff: reused the saved run of {made_by} ({len(run['history'])} rounds)")
        return run["weights"], run["history"], "reused"
    log(f"fedavg_tff: {status}")
    if not tff_available_here():
        return None, None, _tff_missing_reason()
    import warnings

    from .jobs import tff_fedavg_job

    log("fedavg_tff: training it now with TFF in this process")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.rounds, desc="TFF FedAvg", unit="round")

    def tick(row):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(test_acc=round(row["test_accuracy"], 4))
    try:
        with warnings.catch_warnings():  # TFF's dependencies import pkg_resources (harmless, noisy)
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
            result = tff_fedavg_job(dict(job_params, FED_EVAL=False, TENSORBOARD_DIR=None, COMPARE_DATA_PATHS=False),
                                    progress=tick, log=log)
    except Exception as err:  # noqa: BLE001 - the notebook's row says why, in a sentence, instead of a traceback
        message = str(err).strip().splitlines()[-1][:300] if str(err).strip() else ""
        return None, None, (f"not available: training TFF's FedAvg here failed ({type(err).__name__}: {message}). "
                            "Run notebook 04 with the same parameters, then this notebook again.")
    finally:
        if bar is not None:
            bar.close()
    save_fedavg_run("fedavg_tff", exp.as_dict(), cfg, result["final_weights"], result["history"],
                    extra={"made_by": "05_evaluation"})
    return result["final_weights"], result["history"], "trained"
