"""Run the course's benchmarks and write the report.

    python -m benchmarks                 # make bench: all five sections, about 90 minutes
    python -m benchmarks --smoke         # make bench-smoke: tiny settings, about a minute
    python -m benchmarks --sections 1,3  # only some sections (merged into the existing report)
    python -m benchmarks --render        # rewrite the markdown and PNGs from report.json

Writes ``build/bench/report.json`` (smoke: ``build/bench-smoke/report.json``) and the readable
report with one PNG per section: ``docs/benchmarks.md`` and ``docs/bench_*.png`` for a full run,
next to the JSON for a smoke run (a smoke run never overwrites the published report). Every
section runs in its own process (each scale configuration too, so its peak memory is its own),
started in a new session that is ended afterwards, TFF's ``worker_binary`` included.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

from . import common, niid, report
from .settings import FULL, SECTION_NUMBERS, SECTIONS, SMOKE, Settings


def parse_sections(text: str | None) -> list[str]:
    if not text:
        return list(SECTIONS)
    chosen = []
    for part in text.split(","):
        part = part.strip().lower()
        name = SECTION_NUMBERS.get(part, part)
        if name not in SECTIONS:
            raise argparse.ArgumentTypeError(
                f"unknown section {part!r}; choose from 1-{len(SECTIONS)} or {', '.join(SECTIONS)}")
        if name not in chosen:
            chosen.append(name)
    return [s for s in SECTIONS if s in chosen]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def run_job(job: dict, settings: Settings, work: Path, name: str) -> dict:
    """Run one job in its own session; return its result dict with timing and machine load."""
    job_path = work / "jobs" / f"{name}.json"
    out_path = work / "jobs" / f"{name}.out.json"
    log_path = work / "logs" / f"{name}.log"
    common.write_json(job_path, dict(job, settings=settings.as_dict()))
    out_path.unlink(missing_ok=True)
    load = common.LoadSampler()
    load()
    started = _now()
    print(f"  {name}: running (log: {log_path.relative_to(common.ROOT) if log_path.is_relative_to(common.ROOT) else log_path})",
          flush=True)
    proc = common.run_isolated([str(job_path), str(out_path)], log_path,
                               timeout=settings.section_timeout_seconds, on_poll=load,
                               env=job.get("env"))
    load()
    if out_path.is_file():
        result = json.loads(out_path.read_text())
    else:
        why = "timed out" if proc["timed_out"] else f"exit code {proc['returncode']}"
        result = {"ok": False, "error": f"the worker wrote no result ({why}); see {log_path}"}
    result["process"] = dict(proc, started_utc=started, load=load.summary(), log=str(log_path))
    status = "ok" if result.get("ok") else f"FAILED: {result.get('error')}"
    print(f"  {name}: {status} ({proc['seconds']:.0f} s, load {load.summary()['mean']:.1f})",
          flush=True)
    return result


def run_section(section: str, settings: Settings, work: Path) -> dict:
    started, t0 = _now(), time.perf_counter()
    print(f"[bench] section {section}", flush=True)
    if section == "scale":
        jobs = []
        for engine in settings.scale.engines:
            groups = ([[k] for k in settings.scale.client_counts] if settings.scale.isolate
                      else [list(settings.scale.client_counts)])
            for counts in groups:
                name = f"scale_{engine}_" + "_".join(map(str, counts))
                res = run_job({"section": "scale", "engine": engine, "client_counts": counts},
                              settings, work, name)
                jobs.append(res)
        configs = []
        for res in jobs:
            for cfg in res.get("configs", []):
                configs.append(dict(cfg, process=res["process"]))
        result = {"ok": all(j.get("ok") for j in jobs) and bool(configs), "configs": configs,
                  "processes": [j["process"] for j in jobs],
                  "train_examples": next((j["train_examples"] for j in jobs if j.get("ok")), None)}
        if not result["ok"]:
            result["error"] = "; ".join(j.get("error", "") for j in jobs if not j.get("ok"))
    elif section == "niid":
        from concurrent.futures import ThreadPoolExecutor

        def one(job):
            return run_job(job, settings, work, "niid_" + "_".join(
                "".join(ch for ch in name.lower() if ch.isalnum())
                for name in job["rows"] + job.get("columns", [])))

        with ThreadPoolExecutor(max_workers=max(1, settings.niid.parallel)) as pool:
            result = niid.combine(list(pool.map(one, niid.jobs(settings))))  # in row order
    else:
        result = run_job({"section": section}, settings, work, section)
    samples = [result["process"]["load"]] if "process" in result else \
        [p["load"] for p in result.get("processes", [])]
    return {"ok": bool(result.get("ok")), "started_utc": started,
            "seconds": time.perf_counter() - t0,
            "load": {"min": min(s["min"] for s in samples), "max": max(s["max"] for s in samples),
                     "mean": sum(s["mean"] for s in samples) / len(samples)},
            "result": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny settings (CI); numbers mean nothing")
    parser.add_argument("--sections", type=parse_sections, default=None,
                        help="comma-separated sections: 1/overhead, 2/rounds, 3/scale, 4/budget, "
                             "5/niid")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for report.json, jobs and logs (default build/bench, "
                             "smoke: build/bench-smoke)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="folder for benchmarks.md and the PNGs (default docs/; smoke: --out)")
    parser.add_argument("--fresh", action="store_true",
                        help="do not merge earlier sections from an existing report.json")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite benchmarks.md and the PNGs from report.json")
    args = parser.parse_args(argv)
    sections = args.sections or list(SECTIONS)
    settings = SMOKE if args.smoke else FULL
    out = (args.out or common.ROOT / ("build/bench-smoke" if args.smoke else "build/bench")).resolve()
    docs = (args.docs or (out if args.smoke else common.ROOT / "docs")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "report.json"
    if args.render:
        if not report_path.is_file():
            parser.error(f"--render needs an existing {report_path}; run the benchmark first")
        payload = report.derive(json.loads(report_path.read_text()))
        common.write_json(report_path, payload)
        print(f"[bench] rewrote {report.write_report(payload, docs, report_path)}")
        return 0
    command = "python -m benchmarks" + "".join(" " + shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))

    previous = None
    if report_path.is_file() and not args.fresh and set(sections) != set(SECTIONS):
        try:
            previous = json.loads(report_path.read_text())
        except json.JSONDecodeError:
            previous = None
        if previous and previous.get("smoke") != settings.smoke:
            previous = None

    t0 = time.perf_counter()
    machine = common.machine_info()
    print(f"[bench] {'SMOKE' if settings.smoke else 'FULL'} run of {', '.join(sections)}; "
          f"{machine['usable_cores']} cores, load {machine['loadavg'][0]:.2f}; output {out}", flush=True)
    results = dict(previous["sections"]) if previous else {}
    for section in sections:
        entry = run_section(section, settings, out)
        entry["command"] = command
        results[section] = entry
    payload = {
        "schema": 1,
        "smoke": settings.smoke,
        "command": command,
        "started_utc": machine["date_utc"],
        "finished_utc": _now(),
        "total_seconds": time.perf_counter() - t0,
        "sections_run": sections,
        "machine": machine,
        "loadavg_end": list(os.getloadavg()),
        "settings": settings.as_dict(),
        "sections": {s: results[s] for s in SECTIONS if s in results},
        "worker_binary_left": len(common.worker_binaries(common.descendants(os.getpid()))),
    }
    report.derive(payload)
    common.write_json(report_path, payload)
    md = report.write_report(payload, docs, report_path)
    print(f"[bench] wrote {report_path} and {md} in {payload['total_seconds']:.0f} s", flush=True)
    for g in payload["goals"]:
        print(f"  goal {g['section']}: {g['goal']}: {g['summary']}", flush=True)
    ok = all(results[s]["ok"] for s in sections)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
