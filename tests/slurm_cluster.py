"""A real single-node Slurm for the `slurm` tests: Debian's slurmctld, slurmd and munge, started as root without
systemd, in a private state directory, and stopped again by their pid files.

Everything lives under one directory (slurm.conf, a fresh munge key and munged's socket, state, spool, logs, pid
files), on free ports, so it neither needs nor touches a running munged. Clients find the cluster through
SLURM_CONF (see `SlurmCluster.env`) and through /etc/slurm/slurm.conf, a symlink made for the cluster's lifetime:
snakemake-executor-plugin-slurm-jobstep (0.6) drops every SLURM_* variable, SLURM_CONF included, before its `srun`
inside the job, so srun reads the default path. A host that has an /etc/slurm/slurm.conf of its own is left alone
(`unavailable_reason` says so). A cluster left by a killed test run (its owner process, recorded in the directory,
is gone) is stopped and replaced; one whose owner still runs is not. Every command runs under `timeout -k`, so
nothing here can hang.

    cluster = SlurmCluster.start()   # a few seconds; raises SlurmError with the daemons' log tails when it fails
    ...                              # sbatch/squeue/snakemake --executor slurm with SLURM_CONF=cluster.conf
    cluster.stop()                   # cancels jobs, stops slurmd, slurmctld and munged, removes the directory

Settings (checked on Debian 12, Slurm 22.05): proctrack/linuxproc and task/none (no cgroups), no accounting
(so clients use squeue, never sacct), select/cons_tres with CR_Core_Memory, MinJobAge=300 (finished jobs stay
visible to squeue, as snakemake-executor-plugin-slurm's squeue status checks need), sched_interval=2.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo", "srun")
PARTITION = "deepflows"
PYTHON_PACKAGES = {
    "snakemake_executor_plugin_slurm": "snakemake-executor-plugin-slurm",
    "dask_jobqueue": "dask-jobqueue",
}
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")  # Debian's build: where srun looks without SLURM_CONF
ROOT_PREFIX = "deepflows-slurm-"
OWNER_FILE = "owner"  # "<pid> <start time>" of the process that started the cluster
INSTALL_HINT = "apt-get install slurmctld slurmd slurm-client munge; pip install -e '.[slurm]'"


class SlurmError(RuntimeError):
    pass


def unavailable_reason() -> str | None:
    """Why a local Slurm cannot be started here (one line), or None when it can."""
    import importlib.util

    missing = [name for name in (*DAEMONS, *CLIENTS, "munge", "runuser", "timeout") if which(name) is None]
    missing += [pkg for module, pkg in PYTHON_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        return f"a local Slurm needs {', '.join(missing)} ({INSTALL_HINT})"
    if os.geteuid() != 0:
        return "a local Slurm needs root (slurmd runs the jobs, munged runs as the munge user)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "a local Slurm needs the munge user (apt-get install munge)"
    return _default_conf_taken()


def _default_conf_taken() -> str | None:
    """Why /etc/slurm/slurm.conf cannot be linked to a new test cluster's, or None (absent, or a stale link)."""
    if not DEFAULT_CONF.is_symlink():
        if DEFAULT_CONF.exists():
            return f"{DEFAULT_CONF} exists (a real Slurm host?): a test cluster would shadow it, so none is started"
        return None
    target = os.readlink(DEFAULT_CONF)
    if not target.startswith(f"/tmp/{ROOT_PREFIX}"):
        return f"{DEFAULT_CONF} links to {target}, not to a test cluster: not replacing it"
    if Path(target).exists() and _owner_alive(Path(target).parent):
        return f"another test Slurm is running ({DEFAULT_CONF} -> {target}); run the slurm tests in one process"
    return None


def _owner_alive(root: Path) -> bool:
    """Whether the process that started the test cluster in root still runs (pid and start time match)."""
    try:
        pid, started = (root / OWNER_FILE).read_text().split()
    except (OSError, ValueError):
        return False
    return _start_time(int(pid)) == started


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat): tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _remove_orphan(root: Path) -> None:
    """Stop what a test cluster whose owner died (a killed test run) left behind: daemons, link, directory."""
    SlurmCluster(root, cpus=1, real_memory_mb=0).stop()


def which(name: str) -> str | None:
    """The program's path, looking in the sbin folders too (the daemons live there; a user's PATH may lack them)."""
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def run(cmd: list[str], timeout: float = 30, check: bool = True, env: dict | None = None, **kwargs):
    """Run cmd under `timeout -k 5 <timeout>` and return the CompletedProcess (text, captured)."""
    bounded = ["timeout", "-k", "5", str(int(timeout)), *cmd]
    result = subprocess.run(
        bounded, check=False, capture_output=True, text=True, env=env, timeout=timeout + 15, **kwargs
    )
    if check and result.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)} exited {result.returncode}: {(result.stderr or result.stdout).strip()}")
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmError("no MemTotal in /proc/meminfo")


@dataclass
class SlurmCluster:
    root: Path
    cpus: int
    real_memory_mb: int
    node: str = field(default_factory=lambda: socket.gethostname().split(".")[0])

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self.root / "munge" / "munge.socket"

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF: what Slurm clients (and jobs, which inherit it) need."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def pid_file(self, daemon: str) -> Path:
        return self.root / f"{daemon}.pid"

    # -- start ---------------------------------------------------------------------------------------------
    @classmethod
    def start(cls, timeout: float = 60) -> SlurmCluster:
        reason = unavailable_reason()
        if reason:
            raise SlurmError(reason)
        root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir="/tmp"))
        root.chmod(0o755)  # munged (as the munge user) must reach its folder inside
        (root / OWNER_FILE).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        cpus = os.cpu_count() or 1  # the hardware as slurmd sees it, not this process's (maybe pinned) affinity
        # below the machine's memory, so slurmd never finds less than configured; at least enough for 2 GB jobs
        cluster = cls(root, cpus=cpus, real_memory_mb=max(2048, int(memory_mb() * 0.9)))
        deadline = time.monotonic() + timeout
        try:
            cluster._start_munged()
            cluster._write_conf()
            cluster._link_default_conf()
            for sub in ("state", "spool"):
                (root / sub).mkdir()
            run([which("slurmctld"), "-c", "-i", "-f", str(cluster.conf)], env=cluster.env)
            cluster._wait(deadline, "slurmctld to answer `scontrol ping`", cluster._ctld_up)
            run([which("slurmd"), "-f", str(cluster.conf)], env=cluster.env)
            cluster._wait(deadline, f"node {cluster.node} to be idle", cluster._node_idle)
        except BaseException as error:
            logs = cluster.log_tails()
            cluster.stop()
            if isinstance(error, SlurmError):
                raise SlurmError(f"{error}\n{logs}") from None
            raise
        return cluster

    def _start_munged(self):
        munge_dir = self.root / "munge"
        munge_dir.mkdir()
        munge_dir.chmod(0o711)  # munged: clients need to reach the socket, nobody needs to list the folder
        key = munge_dir / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o400)
        user = pwd.getpwnam("munge")
        for path in (munge_dir, key):
            os.chown(path, user.pw_uid, user.pw_gid)
        run(
            [which("runuser"), "-u", "munge", "--", which("munged"), f"--socket={self.munge_socket}",
             f"--key-file={key}", f"--pid-file={munge_dir / 'munged.pid'}", f"--log-file={munge_dir / 'munged.log'}",
             f"--seed-file={munge_dir / 'munged.seed'}"]
        )  # fmt: skip
        run(["munge", f"--socket={self.munge_socket}", "-n"])  # a credential comes back: munged is up

    def _write_conf(self):
        r = self.root
        settings = {
            "ClusterName": "deepflows-test",
            "SlurmctldHost": f"{self.node}(127.0.0.1)",
            "SlurmctldPort": free_port(),
            "SlurmdPort": free_port(),
            "SlurmUser": "root",
            "SlurmdUser": "root",
            "AuthType": "auth/munge",
            "CredType": "cred/munge",
            "AuthInfo": f"socket={self.munge_socket}",
            "ProctrackType": "proctrack/linuxproc",
            "TaskPlugin": "task/none",
            "MpiDefault": "none",
            "SwitchType": "switch/none",
            "JobAcctGatherType": "jobacct_gather/none",
            "AccountingStorageType": "accounting_storage/none",
            "JobCompType": "jobcomp/none",
            "SelectType": "select/cons_tres",
            "SelectTypeParameters": "CR_Core_Memory",
            "SlurmdParameters": "config_overrides",  # trust the node line below, never drain on a mismatch
            "ReturnToService": 2,
            "MinJobAge": 300,  # >= 120: snakemake's squeue status checks see finished jobs
            "SchedulerType": "sched/backfill",
            "SchedulerParameters": "sched_interval=2",
            "KillWait": 5,
            "StateSaveLocation": r / "state",
            "SlurmdSpoolDir": r / "spool",
            "SlurmctldPidFile": self.pid_file("slurmctld"),
            "SlurmdPidFile": self.pid_file("slurmd"),
            "SlurmctldLogFile": r / "slurmctld.log",
            "SlurmdLogFile": r / "slurmd.log",
        }
        lines = [f"{key}={value}" for key, value in settings.items()]
        lines.append(
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.real_memory_mb} State=UNKNOWN"
        )
        lines.append(f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _link_default_conf(self):
        taken = _default_conf_taken()
        if taken:
            raise SlurmError(taken)
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        if DEFAULT_CONF.is_symlink() and Path(os.readlink(DEFAULT_CONF)).exists():
            _remove_orphan(Path(os.readlink(DEFAULT_CONF)).parent)
        DEFAULT_CONF.unlink(missing_ok=True)  # a stale link of an earlier test cluster
        DEFAULT_CONF.symlink_to(self.conf)

    def _unlink_default_conf(self):
        if DEFAULT_CONF.is_symlink() and os.readlink(DEFAULT_CONF) == str(self.conf):
            DEFAULT_CONF.unlink()

    def _wait(self, deadline: float, what: str, ready) -> None:
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.5)
        raise SlurmError(f"timed out waiting for {what}")

    def _ctld_up(self) -> bool:
        ping = run(["scontrol", "ping"], timeout=10, check=False, env=self.env)
        return ping.returncode == 0 and "UP" in ping.stdout

    def _node_idle(self) -> bool:
        state = run(["sinfo", "-h", "-N", "-o", "%T"], timeout=10, check=False, env=self.env).stdout.split()
        return state == ["idle"]

    # -- use -----------------------------------------------------------------------------------------------
    def run(self, cmd: list[str], timeout: float = 30, check: bool = True):
        """A Slurm client command against this cluster (SLURM_CONF set), bounded by `timeout -k`."""
        return run(cmd, timeout=timeout, check=check, env=self.env)

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (finished ones stay MinJobAge seconds): id, name, state, comment."""
        out = self.run(["squeue", "-h", "--states=all", "-o", "%i|%j|%T|%k"]).stdout
        rows = [line.split("|", 3) for line in out.splitlines() if line.strip()]
        return [dict(zip(("id", "name", "state", "comment"), row)) for row in rows]

    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for log in ("slurmctld.log", "slurmd.log", "munge/munged.log"):
            path = self.root / log
            if path.is_file():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path}\n" + "\n".join(tail))
        return "\n".join(parts)

    # -- stop ----------------------------------------------------------------------------------------------
    def stop(self, timeout: float = 20) -> None:
        """Cancel all jobs, stop slurmd, slurmctld and munged by their pid files, remove the link in /etc/slurm and
        the state directory."""
        if self.conf.is_file() and self.pid_file("slurmctld").is_file():
            self.run(["scancel", "--user=root", f"--partition={PARTITION}"], timeout=10, check=False)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self._active_jobs():
                time.sleep(0.5)
        survivors = []
        for daemon, pid_file in (("slurmd", self.pid_file("slurmd")), ("slurmctld", self.pid_file("slurmctld")),
                                 ("munged", self.root / "munge" / "munged.pid")):  # fmt: skip
            pid = _read_pid(pid_file)
            if pid is not None and _command(pid) == daemon and not _terminate(pid, timeout):
                survivors.append(f"{daemon} (pid {pid})")
        self._unlink_default_conf()
        shutil.rmtree(self.root, ignore_errors=True)
        if survivors:
            raise SlurmError(f"still running after SIGKILL: {', '.join(survivors)}")

    def _active_jobs(self) -> bool:
        out = self.run(["squeue", "-h", "-o", "%i"], timeout=10, check=False)
        return out.returncode == 0 and bool(out.stdout.strip())


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _command(pid: int) -> str | None:
    """The process's command name (so a stale pid file never gets another process signalled)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM, then SIGKILL after timeout; True once the process is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _alive(pid):
                return True
            time.sleep(0.2)
    return not _alive(pid)
