"""Where a study lives: a file in the study folder by default, or a shared database for many machines.

``sqlite`` (one process; the default for ``--n-jobs 1``) and ``journal`` (Optuna's journal file, safe for
several processes on one machine; the default for ``--n-jobs K > 1``) live in the study folder. A
``postgresql://`` URL puts the study on a server that workers on many machines share. These are Optuna's own
storages: adaptive_lb adds no protocol of its own.

Killed workers. Database storages send a heartbeat from every running trial; a trial silent for
``tune.grace_s`` is failed and re-queued by Optuna (``RetryHeartbeatStaleTrialCallback``). The journal file has
no heartbeat, so every worker also checks the trials of its own machine: a running trial whose worker
process no longer exists (same host, pid gone or reused) is failed and re-queued the same way.
"""

from __future__ import annotations

import os
import random
import socket
import time
import warnings
from pathlib import Path
from typing import Any

from adaptive_lb.errors import ConfigError
from adaptive_lb.tune.space import TuneConfig

SQLITE_FILE, JOURNAL_FILE = "study.db", "journal.log"
USAGE = ("use sqlite, journal, a file ending in .db or .log, sqlite:///FILE or "
         "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB")


def resolve_storage(arg: str | None, study_dir: Path, processes: int) -> str:
    """The storage URL for ``--storage`` (``None`` = a file in ``study_dir``; an existing one is reused)."""
    if arg is None:
        if (study_dir / SQLITE_FILE).exists() or (processes == 1 and not (study_dir / JOURNAL_FILE).exists()):
            arg = "sqlite"
        else:
            arg = "journal"
    if arg == "sqlite":
        return f"sqlite:///{(study_dir / SQLITE_FILE).resolve()}"
    if arg == "journal":
        return f"journal:{(study_dir / JOURNAL_FILE).resolve()}"
    if arg.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
        return "postgresql+psycopg://" + arg.split("://", 1)[1]
    if arg.startswith("sqlite:///"):
        return arg
    if "://" not in arg and arg.endswith(".db"):
        return f"sqlite:///{Path(arg).resolve()}"
    if "://" not in arg and arg.endswith(".log"):
        return f"journal:{Path(arg).resolve()}"
    raise ConfigError(f"--storage '{arg}' is not a storage adaptive_lb knows: {USAGE}")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and study attributes)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"


def open_storage(url: str, tune: TuneConfig) -> Any:
    """The Optuna storage behind ``url``; an unreachable or unusable one is a one-line ConfigError."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.split(":", 1)[1])
        _need_folder(path)
        return JournalStorage(JournalFileBackend(str(path)))
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            raise ConfigError("a postgresql:// storage needs the psycopg driver: pip install -e '.[postgres]'") \
                from None
        kwargs["connect_args"] = {"connect_timeout": 10}
    else:
        _need_folder(Path(url.removeprefix("sqlite:///")))
    attempt = 0
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=tune.heartbeat_s, grace_period=tune.grace_s,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=tune.retries))
            except Exception as exc:  # sqlalchemy's OperationalError and friends: the reason is in the first line
                if _table_race(exc) and attempt < 3:  # workers starting at once on an empty database
                    attempt += 1
                    time.sleep(0.5 + random.random())
                    continue
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ConfigError(f"storage {redact(url)} cannot be reached ({reason[:200]}): check the URL, that "
                                  "the server runs and accepts this user, or drop --storage for a local file") \
                    from None


def _table_race(exc: Exception) -> bool:
    """Two processes creating Optuna's tables at once: the loser sees a duplicate; it can simply retry."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    return isinstance(exc, (IntegrityError, ProgrammingError)) and (
        "duplicate" in str(exc).lower() or "already exists" in str(exc).lower())

def _need_folder(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the study folder '{path.parent}' ({exc.strerror}): choose another "
                          "--dir") from None


# ---------------------------------------------------------------------------------------------- liveness
def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' elsewhere: tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def worker_id() -> str:
    """``host:pid:start`` of this process, stored on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"


def _alive(worker: str) -> bool:
    """Whether the worker recorded as ``host:pid:start`` still runs; other hosts are assumed alive."""
    host, pid, start = [*worker.split(":"), "", "", ""][:3]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not start or _start_time(int(pid)) == start


def requeue(study: Any, trial: Any, reason: str, max_retry: int) -> None:
    """Mark running ``trial`` failed with ``reason`` and queue a copy of its parameters (Optuna's retry)."""
    import optuna

    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # another worker got there first
    retry(study, storage.get_trial(trial._trial_id), max_retry)


def retry(study: Any, failed: Any, max_retry: int) -> None:
    """Queue a copy of failed trial ``failed`` (Optuna's heartbeat retry, which tracks the retry history)."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, failed)


def fail_dead_local_trials(study: Any, max_retry: int) -> list[int]:
    """Fail and re-queue running trials whose worker process on this machine is gone; their numbers."""
    import optuna

    dead = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if worker and not _alive(worker):
            requeue(study, trial, f"worker {worker.rsplit(':', 1)[0]} died mid-trial", max_retry)
            dead.append(trial.number)
    return dead
