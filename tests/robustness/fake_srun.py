"""``srun`` as the SLURM tests need it, with no SLURM: ``python fake_srun.py NTASKS COMMAND...`` starts ``NTASKS``
tasks of one command on this machine, each with the variables slurmstepd gives a task (Lightning's
SLURMEnvironment reads them: the launcher starts no ranks of its own). The tasks share this process's group, so a
signal to the group reaches every task, as ``#SBATCH --signal=USR1@120`` does; this process only waits for them and
exits with the first non-zero status among them, as srun does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

JOB_ID = "4242"


def main() -> int:
    ntasks, command = int(sys.argv[1]), sys.argv[2:]
    for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)  # meant for the tasks (a handler, not SIG_IGN: exec resets it)
    env = dict(os.environ, SLURM_JOB_ID=JOB_ID, SLURM_JOB_NAME="lit-infer", SLURM_NTASKS=str(ntasks))
    env.update(SLURM_NTASKS_PER_NODE=str(ntasks), SLURM_NNODES="1", SLURM_NODEID="0", SLURM_NODELIST="localhost")
    tasks = [
        subprocess.Popen(command, env={**env, "SLURM_PROCID": str(i), "SLURM_LOCALID": str(i)}) for i in range(ntasks)
    ]
    codes = [task.wait() for task in tasks]
    return next((c if c > 0 else 128 - c for c in codes if c != 0), 0)


if __name__ == "__main__":
    sys.exit(main())
