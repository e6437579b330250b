"""The run folder: what a run leaves on disk, and how it continues, here or on another machine.

One layout for ``python -m gpae_ref.train`` (one seed) and the experiment
runner (S seeds of a variant, vmapped)::

    <run>/run.json                    the run record (below)
    <run>/metrics.csv                 train: one row per update (runner: seed<k>.csv, one per seed)
    <run>/resume<tag>.safetensors.xz  compact resume state: checksummed, small, meant for git
    <run>/ckpt/state<tag>.safetensors full checkpoint: exact, large; ckpt/ ignores itself (.gitignore)
    <run>/ckpt/lock                   "host pid" of the process training the run
    <run>/curve.png                   train: the win-rate curve

``<tag>`` is empty, or ``-s<k>-...`` when the runner trains a subset of a
variant's seeds. The run record (``run.json``, written atomically) holds
``format``, ``config`` (the learner config), ``schedule``, ``seeds``, ``smax``
(the jaxmarl whose SMAX the run uses), ``command`` (what reproduces the run)
and ``resumes`` (a list of ``{"update", "kind", "time"}``: every resume and
whether it came from the ``full`` checkpoint or the ``compact`` state), plus
what the runner adds (experiment, variant, machine, ...).

Every checkpoint point writes the full checkpoint, then the compact state.
A resume takes the full checkpoint when it is there (this machine) and the
compact state otherwise (a fresh clone); either is refused, naming the file and
changing nothing, when it is damaged or belongs to another run (config or
seeds differ). CSV rows past the resumed update are dropped through a new file
and a rename, so no error can lose rows.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpae_ref.learner.config import check_scenario, LearnerConfig
from gpae_ref.learner.dataspec import DataSpec
from gpae_ref.learner.schedule import Schedule, SCHEDULE_FIELDS
from gpae_ref.learner.settings import train_argv

FORMAT = "gpae-ref-run/2"
RECORD = "run.json"
LEGACY_RECORD = "config.json"  # train's record before format 2
LEGACY_CHECKPOINT = "checkpoint.safetensors"  # train's full checkpoint before format 2
CKPT_DIR = "ckpt"
CSV_TRAIN = "metrics.csv"
CURVE = "curve.png"


class RunFolderError(ValueError):
    """A run folder that cannot be continued as it is; the message names the file and what to do."""


@dataclass(frozen=True)
class RunFolder:
    """The files of one run (``seeds`` None: one unbatched seed, as ``train`` runs)."""

    path: Path
    seeds: tuple[int, ...] | None = None
    tag: str = ""
    csv_names: tuple[str, ...] = field(default=())

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))
        if not self.csv_names:
            names = (CSV_TRAIN,) if self.seeds is None else tuple(f"seed{s}.csv" for s in self.seeds)
            object.__setattr__(self, "csv_names", names)

    @property
    def record_path(self) -> Path:
        return self.path / RECORD

    @property
    def csv_paths(self) -> list[Path]:
        return [self.path / n for n in self.csv_names]

    @property
    def full_path(self) -> Path:
        return self.path / CKPT_DIR / f"state{self.tag}.safetensors"

    @property
    def compact_path(self) -> Path:
        return self.path / f"resume{self.tag}.safetensors.xz"

    @property
    def curve_path(self) -> Path:
        return self.path / CURVE

    def create(self) -> None:
        """Make the folder and ``ckpt/`` (which tells git to ignore it, wherever the folder is)."""
        (self.path / CKPT_DIR).mkdir(parents=True, exist_ok=True)
        ignore = self.path / CKPT_DIR / ".gitignore"
        if not ignore.exists():
            ignore.write_text("# full checkpoints: large, machine-local (the compact state travels)\n*\n!.gitignore\n")

    def has_state(self) -> bool:
        return self.full_path.exists() or self.compact_path.exists() or self._legacy_full().exists()

    def _legacy_full(self) -> Path:
        return self.path / LEGACY_CHECKPOINT

    def remove_state(self) -> None:
        for p in (self.full_path, self.compact_path, self._legacy_full(), *self.csv_paths, self.curve_path):
            p.unlink(missing_ok=True)


# ------------------------------------------------------------------ JSON
def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename): a kill never leaves half a record."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; ``RunFolderError`` naming the file if it is not one."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError as e:
        raise RunFolderError(f"{path}: cannot read it ({e.strerror or e}).") from None
    except ValueError as e:
        raise RunFolderError(f"{path}: not valid JSON ({e}); restore it from git or a copy.") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: holds a JSON {type(data).__name__}, not a run record (an object); "
                             f"restore it from git or a copy.")
    return data


def read_record(folder: RunFolder) -> dict:
    """The run record, checked (``check_record``); a train run folder of format 1 has ``config.json``."""
    if folder.record_path.exists():
        return check_record(read_json(folder.record_path), folder.record_path)
    legacy = folder.path / LEGACY_RECORD
    if legacy.exists():
        old = read_json(legacy)
        if "learner" in old:
            return {**old, "config": old["learner"]}
        return {"config": old}  # the oldest: a flat LearnerConfig
    raise RunFolderError(f"{folder.path}: no {RECORD}; this is not a run folder (give the folder that "
                         f"holds {RECORD}).")


def check_record(record: dict, path: Path) -> dict:
    """``record`` if its keys hold what a resume reads (the config is ``record_config``'s); else
    ``RunFolderError`` naming the file and the key. Records from before a key existed lack it."""
    def refuse(key: str, what: str):
        raise RunFolderError(f"{path}: {key!r} {what}; restore the file from git or a copy.")

    if record.get("format", FORMAT) != FORMAT:
        raise RunFolderError(f"{path}: format {record['format']!r}, not {FORMAT!r}: another version of gpae-ref "
                             f"wrote it; resume it with that version.")
    for key in ("smax", "command"):
        if record.get(key) is not None and not isinstance(record[key], str):
            refuse(key, f"is {record[key]!r}, not a string")
    seeds = record.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and all(type(x) is int and x >= 0 for x in seeds)):
        refuse("seeds", f"is {seeds!r}, not a list of seeds (integers >= 0)")
    resumes = record.get("resumes", [])
    if not (isinstance(resumes, list) and all(isinstance(r, dict) for r in resumes)):
        refuse("resumes", f"is {resumes!r}, not a list of resume entries")
    schedule = record.get("schedule")
    if schedule is not None:
        if not isinstance(schedule, dict) or set(schedule) - set(SCHEDULE_FIELDS):
            refuse("schedule", f"is {schedule!r}, not an object of {', '.join(SCHEDULE_FIELDS)}")
        try:
            Schedule(**schedule)
        except ValueError as e:
            refuse("schedule", f"is not valid ({e})")
    return record


def record_config(record: dict, path: Path):
    """The ``LearnerConfig`` of a run record; ``RunFolderError`` naming the file and field if invalid."""
    cfg = record.get("config")
    if not isinstance(cfg, dict):
        raise RunFolderError(f"{path}: 'config' is missing or not an object; restore the file from git or a copy.")
    try:
        config = LearnerConfig.from_dict(cfg)
        check_scenario(config)  # the map is jaxmarl's to know: a resume has it
        return config
    except (TypeError, ValueError) as e:
        raise RunFolderError(f"{path}: its config is not valid ({e}); restore the file from git or a copy, "
                             f"or start a new run.") from None


def new_record(config, schedule, seeds, smax: str, command: str, **extra) -> dict:
    return {"format": FORMAT, "config": config.to_dict(), "schedule": schedule.to_dict(),
            "seeds": None if seeds is None else list(seeds), "smax": smax, "command": command,
            "resumes": [], **extra}


def resume_entry(update: int, kind: str) -> dict:
    """One item of the record's ``resumes``: the update resumed at, ``full`` or ``compact``, UTC time."""
    return {"update": update, "kind": kind, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ------------------------------------------------------------------ SMAX and commands
def check_smax(recorded: str | None, have: str, where: str, flag: str = "--resume") -> None:
    """``RunFolderError`` (flag first) if results of jaxmarl ``recorded`` would continue on ``have``."""
    if recorded in (None, "unknown", have):
        return
    raise RunFolderError(f"{flag}: {where} runs on SMAX from jaxmarl {recorded}; this Python has jaxmarl "
                         f"{have} (the authors' 0.0.7 is in .venv-authors: make env-authors; run this "
                         f"command with that Python).")


def reproduce_command(config, schedule, name: str | None = None) -> str:
    """The one ``python -m gpae_ref.train`` command that runs ``config`` with ``schedule``."""
    sched = [x for k, v in schedule.to_dict().items() for x in (f"--{k.replace('_', '-')}", str(v))]
    tail = ["--name", name] if name else []
    return " ".join(["python -m gpae_ref.train", *train_argv(config), *sched, *tail])


# ------------------------------------------------------------------ states
def save_state(folder: RunFolder, state, meta: dict, data: DataSpec) -> None:
    """The full checkpoint, then the compact state (a kill in between leaves the full one newer)."""
    from safetensors import SafetensorError

    from gpae_ref.learner.checkpoint import save_checkpoint, save_compact

    try:
        folder.create()
        save_checkpoint(folder.full_path, state, meta)
        save_compact(folder.compact_path, state, meta, data_prefix=data.prefix(), keep=data.keep,
                     axis=0 if folder.seeds is None else 1)
    except (OSError, SafetensorError) as e:  # a full disk, a folder gone read-only: one line, not a traceback
        raise RunFolderError(f"{folder.path}: cannot write its state ({getattr(e, 'strerror', None) or e}); the "
                             f"last state written is kept: free space or fix the folder, then resume (train: "
                             f"--resume {folder.path}; the experiment runner: the same command).") from None


def load_state(folder: RunFolder, template, expect: dict, *, allow_unchecked: bool = False):
    """-> (state, meta, kind): the full checkpoint if present, else the compact state.

    ``expect`` holds ``config`` (a dict) and ``seeds`` of the run; a file written by another
    run is refused. Raises ``CheckpointError`` / ``RunFolderError`` (ValueErrors) naming the file.
    """
    from gpae_ref.learner.checkpoint import load_checkpoint, load_compact

    full = folder.full_path if folder.full_path.exists() else folder._legacy_full()
    if full.exists():
        state, meta = load_checkpoint(full, template, allow_unchecked=allow_unchecked)
        kind, path = "full", full
    elif folder.compact_path.exists():
        state, meta = load_compact(folder.compact_path, template, allow_unchecked=allow_unchecked)
        kind, path = "compact", folder.compact_path
    else:
        raise RunFolderError(f"{folder.path}: no saved state ({folder.full_path.relative_to(folder.path)} or "
                             f"{folder.compact_path.name}) to resume from; start the run again.")
    _check_belongs(path, meta, expect)
    return state, meta, kind


def _check_belongs(path: Path, meta: dict, expect: dict) -> None:
    fix = "it belongs to another run: put this run's own state back, or start this run again"
    if "seeds" in meta and "seeds" in expect and meta["seeds"] != expect["seeds"]:
        raise RunFolderError(f"{path}: written for seeds {meta['seeds']}, this run has {expect['seeds']}; {fix}.")
    if "config" in meta and "config" in expect:
        try:
            same = LearnerConfig.from_dict(meta["config"]) == LearnerConfig.from_dict(expect["config"])
        except (TypeError, ValueError):
            same = False
        if not same:
            theirs = meta["config"] if isinstance(meta["config"], dict) else {}
            diff = sorted(k for k in set(theirs) | set(expect["config"])
                          if theirs.get(k) != expect["config"].get(k))
            first = diff[0] if diff else "config"
            raise RunFolderError(
                f"{path}: written with another learner config than this run's (differs in {diff[:4]}; {first}: "
                f"the state has {theirs.get(first)!r}, the run {expect['config'].get(first)!r}); one of the two "
                f"belongs to another run: restore run.json from git or a copy, or put this run's own state back, or "
                f"start this run again.")


# ------------------------------------------------------------------ CSV rows
def keep_rows(folder: RunFolder, last_update: int) -> list[int]:
    """Before continuing at ``last_update``: drop every CSV row past it (and a partial trailing line
    a kill left), writing a new file and renaming it over the old; -> rows kept per file. Every file
    is checked before any is rewritten."""
    kept = [checked_rows(p, last_update) for p in folder.csv_paths]
    return [write_rows(p, rows) for p, rows in zip(folder.csv_paths, kept)]


def checked_rows(path: Path, last_update: int) -> list[dict] | None:
    """The rows of ``path`` up to ``last_update`` (None if there is no file). A row the run loop
    cannot have written (update not an integer counting up from 1, a value not a number) is refused
    naming the file and row; rows missing at or before ``last_update`` (a file cut or damaged) are
    said on stderr, and the run goes on without them."""
    from gpae_ref.learner.logbook import COLUMNS, EVAL_COLUMNS, read_rows

    if not path.exists():
        if last_update > 0:
            print(f"warning: {path} is missing: the rows for updates 1-{last_update} are lost; the run goes on "
                  f"from update {last_update} in a new file (restore the file from git or a copy first to keep "
                  f"them).", file=sys.stderr)
        return None
    try:
        rows = read_rows(path)
    except (UnicodeDecodeError, csv.Error) as e:
        raise RunFolderError(f"{path}: not a metrics CSV ({e}); restore the file from git or a copy.") from None
    if rows and "update" not in rows[0]:
        raise RunFolderError(f"{path}: its header has no 'update' column (the first line was damaged); "
                             f"restore the file from git or a copy.")
    unknown = [c for c in (rows[0] if rows else ()) if c not in COLUMNS]
    if unknown:
        raise RunFolderError(f"{path}: its header names {unknown[0]!r}, not a column of a metrics CSV (the first "
                             f"line was damaged); restore the file from git or a copy.")
    # Evaluation columns are empty between evaluations; a column empty in every row is one this
    # version added after the file was written. Anywhere else an empty value is damage.
    needed = {c for c in rows[0] if c not in EVAL_COLUMNS and any(r[c] for r in rows)} if rows else set()
    previous = 0
    for i, row in enumerate(rows):
        _check_row(path, i + 2, row, previous, needed)
        previous = int(row["update"])
    kept = [r for r in rows if int(r["update"]) <= last_update]
    missing = last_update - len(kept)  # updates count up from 1 without repeats: these are gaps
    if missing:
        have = {int(r["update"]) for r in kept}
        first = min(set(range(1, last_update + 1)) - have)
        print(f"warning: {path}: {missing} of the rows for updates 1-{last_update} are missing (the first: "
              f"update {first}; the file was cut or damaged); the run goes on from update {last_update} "
              f"without them (restore the file from git or a copy first to keep them).", file=sys.stderr)
    return kept


def _check_row(path: Path, line: int, row: dict, previous: int, needed: set) -> None:
    """``RunFolderError`` naming ``path`` and ``line`` unless ``row`` could be the run loop's."""
    def refuse(what: str):
        raise RunFolderError(f"{path}: line {line} {what}; restore the file from git or a copy.")

    try:
        update = int(row["update"])
    except ValueError:
        refuse(f"has update {row['update']!r}, not an integer")
    if update <= previous:
        refuse(f"has update {update} after update {previous} (updates count up from 1)")
    for column, value in row.items():
        if not value and column in needed:
            refuse(f"has no {column}")
        if value:
            try:
                float(value)
            except ValueError:
                refuse(f"has {column} {value!r}, not a number")


def write_rows(path: Path, rows: list[dict] | None) -> int:
    """Write ``rows`` to ``path`` through a new file renamed over it (an error loses nothing)."""
    from gpae_ref.learner.logbook import COLUMNS

    if rows is None:
        return 0
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buf.getvalue(), newline="")
    os.replace(tmp, path)
    return len(rows)


def truncate_rows(path: Path, last_update: int) -> int:
    """Keep only the complete rows of ``path`` with update <= ``last_update`` (new file, renamed over)."""
    return write_rows(path, checked_rows(path, last_update))


# ------------------------------------------------------------------ lock
class Lock:
    """Refuse a run another live process on this host is training (it would truncate its rows).

    The lock file holds ``host pid``; one left by a killed process is stale and taken over.
    """

    def __init__(self, folder: RunFolder):
        self.path = folder.path / CKPT_DIR / "lock"  # beside the full checkpoint: out of git with it

    def __enter__(self):
        me = f"{platform.node()} {os.getpid()}"
        if self.path.exists():
            host, _, pid = self.path.read_text().partition(" ")
            if host == platform.node() and pid.strip().isdigit() and _alive(int(pid)) \
                    and int(pid) != os.getpid():
                raise RunFolderError(f"{self.path.parent.parent}: process {pid.strip()} is training this run; "
                                     f"wait for it or stop it (Ctrl-C) first (if no process of yours trains "
                                     f"it, e.g. after a reboot reused the pid, delete {self.path}).")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(me)
        return self

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
