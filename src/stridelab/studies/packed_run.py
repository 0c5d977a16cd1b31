"""A run's process under ``launcher=packed`` (:mod:`stridelab.studies.packing`):
``python -m stridelab.studies.packed_run``, its job on stdin from the launcher (a pipe, never a file).

It runs the job as Hydra's launchers do (``run_job``: the job's folder, logging and callbacks), and
reports the job's return value (what a tuning sweeper maximises) as JSON on the file descriptor
``STRIDELAB_PACKED_RESULT_FD``. A stop signal before the run installs its own handlers ends it here,
with nothing to save; inside the run, the run's handlers checkpoint and record it as interrupted.
"""

from __future__ import annotations

import json
import os
import pickle
import sys

from stridelab.errors import RunInterrupted

RESULT_FD_ENV = "STRIDELAB_PACKED_RESULT_FD"


def child_main() -> int:
    """A run's process: read its job from the launcher (a pipe from the parent, never a file), run it
    as Hydra's launchers do, report the job's return value on ``STRIDELAB_PACKED_RESULT_FD``."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import JobStatus, run_job, setup_globals

    from stridelab.training.checkpoint import StopSignals

    fd = int(os.environ.pop(RESULT_FD_ENV))
    report: dict = {}
    try:
        with StopSignals(None):  # a signal before the run's own handlers: stop here, nothing to save yet
            job = pickle.loads(sys.stdin.buffer.read())  # cloudpickle's format; written by our parent
            setup_globals()
            Singleton.set_state(job["singleton"])
            HydraConfig.instance().set_config(job["config"])
            ret = run_job(
                hydra_context=job["hydra_context"],
                config=job["config"],
                task_function=job["task_function"],
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
        if ret.status == JobStatus.COMPLETED:
            report["return_value"] = _jsonable(ret.return_value)
        else:
            report["error"] = repr(ret._return_value)
            print(f"stridelab: error: {ret._return_value!r}", file=sys.stderr)
        status = 0 if ret.status == JobStatus.COMPLETED else 1
    except RunInterrupted as err:
        report["interrupted"] = err.signame
        status = err.exit_status
    os.write(fd, json.dumps(report).encode())
    os.close(fd)
    sys.stdout.flush()
    return status


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


if __name__ == "__main__":
    sys.exit(child_main())
