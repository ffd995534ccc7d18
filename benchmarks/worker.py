"""One benchmark job in a fresh process: ``python -m benchmarks.worker JOB.json OUT.json``.

The orchestrator (:mod:`benchmarks.__main__`) starts each job in its own session and ends the
session afterwards, TFF's worker_binary included; the job writes its result (or its error) to
OUT.json. JOB.json holds ``{"section": ..., "settings": Settings.as_dict(), ...}``.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

from . import common, sections
from .settings import settings_from_dict


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m benchmarks.worker JOB.json OUT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    out_path = Path(argv[1])
    settings = settings_from_dict(job["settings"])
    section = job["section"]
    start = time.perf_counter()
    try:
        if section == "overhead":
            result = sections.overhead(settings)
        elif section == "rounds":
            result = sections.rounds(settings)
        elif section == "scale":
            result = sections.scale(settings, job["engine"], [int(k) for k in job["client_counts"]])
        elif section == "budget":
            result = sections.budget(settings)
        elif section == "niid":
            from . import niid

            result = niid.run(settings, job.get("rows"), job.get("columns"))
        else:
            raise ValueError(f"unknown section {section!r}")
        result["ok"] = True
    except Exception as err:  # noqa: BLE001 - reported in the JSON, and the exit code says so
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(err).__name__}: {err}"}
    result["worker_seconds"] = time.perf_counter() - start
    common.write_json(out_path, result)
    print(f"[worker] {section} done in {result['worker_seconds']:.1f} s (ok={result['ok']})",
          flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
