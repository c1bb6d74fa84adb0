"""Where a study's files live: a directory every node mounts, or a URI on any fsspec filesystem.

``--out`` is either a plain path or a URI (``s3://bucket/study``, ``gs://...``, ``file:///...``,
``sftp://host/...``: any protocol fsspec knows, with its package installed: s3fs, gcsfs, ...).

- **A plain path** must be the same directory on every node (NFS, Lustre, a cloud file system):
  runs write into it directly, and the Ray preflight checks that every node reads back a marker
  the driver wrote there.
- **A URI** is *storage*, never written in place. The driver keeps its own files (``study.json``,
  ``spec.yaml``, ``configs/``, ``status.jsonl``) in a local directory (:func:`cache_dir`) and
  uploads them; it judges which runs are complete by reading each run's ``summary.json`` from the
  storage. Each run trains in a directory local to its worker (:func:`scratch_root`), and
  :class:`RunSync` uploads that run directory at each new checkpoint and at the end, and downloads
  it before ``train --resume`` on whichever node retries it. ``llm-explorer status`` and
  ``report`` read a copy fetched from the storage (:func:`local_copy`).

Uploads keep the storage resumable at every moment: the ordinary files (``metrics.csv``,
``updates.jsonl``, ...) go first, then each new checkpoint with its ``meta.json`` last, so a
checkpoint that is complete on the storage never points past the files it cuts back on resume;
``summary.json`` goes last of all. On file systems where a put is not atomic (anything but an
object store) each file is written to a temporary name and renamed.

Why fsspec and not pyarrow.fs (which Ray Train/Tune use for ``storage_path``): fsspec already comes
with torch (no new dependency), covers every protocol pyarrow.fs does (S3, GCS, HDFS, Azure, local)
and more (sftp, ftp, webdav, ...), and can wrap a pyarrow filesystem if one is wanted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from explorer_pipeline.errors import UsageError
from explorer_rundir.format import CONFIG_FILE, SUMMARY_FILE, run_is_complete

if TYPE_CHECKING:
    from .launch import Job

__all__ = ["CACHE_ENV", "SCRATCH_ENV", "Remote", "RemoteRun", "RunSync", "StudyStorage", "cache_dir", "is_uri",
           "local_copy", "open_study", "read_marker", "scratch_root", "upload_report"]

log = logging.getLogger(__name__)

SCRATCH_ENV = "LLM_EXPLORER_SCRATCH"
"""Where a worker trains runs of a study on a URI (default: the system's temporary directory)."""
CACHE_ENV = "LLM_EXPLORER_STUDY_CACHE"
"""Where the driver keeps its copy of a study on a URI (default: ~/.cache/llm-explorer/studies)."""
STATUS_PUSH_S = 10.0
"""At most one upload of ``status.jsonl`` per this many seconds for heartbeats (other events at once)."""
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "oci", "r2", "memory"})
"""Protocols whose put replaces an object atomically (no temporary name needed)."""
CHECKPOINTS, META = "checkpoints", "meta.json"
STUDY_FILES = ("study.json", "spec.yaml", "status.jsonl")
REPORT_FILES = (SUMMARY_FILE, "metrics.csv", "updates.jsonl")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_uri(value: str | os.PathLike[str]) -> bool:
    """``value`` is a URI (``scheme://...``), not a plain path."""
    return isinstance(value, str) and bool(_URI.match(value))


def _key(uri: str) -> str:
    return hashlib.sha1(uri.encode("utf-8")).hexdigest()[:16]


def scratch_root() -> Path:
    """This node's directory for runs of studies on a URI (``$LLM_EXPLORER_SCRATCH``)."""
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "llm-explorer-scratch")


def cache_dir(uri: str) -> Path:
    """The driver's directory for the study at ``uri`` (``$LLM_EXPLORER_STUDY_CACHE``)."""
    base = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llm-explorer" / "studies"
    return Path(base) / _key(uri.rstrip("/"))


class Remote:
    """A study's storage at ``uri``, through fsspec. Paths are relative to it, ``/``-separated.
    Pickles as its URI (the filesystem is opened again where it is used)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        self._fs: Any = None
        self._root = ""

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"])  # type: ignore[misc]

    @property
    def fs(self) -> Any:
        """The fsspec filesystem (opened on first use). UsageError when fsspec cannot open it."""
        if self._fs is None:
            try:
                from fsspec.core import url_to_fs

                self._fs, self._root = url_to_fs(self.uri)
            except (ImportError, ValueError) as exc:
                raise UsageError(f"cannot open the study storage {self.uri!r}: {exc}") from None
            self._root = self._root.rstrip("/")
        return self._fs

    @property
    def atomic_put(self) -> bool:
        """A put replaces the object at once (object stores): no temporary name is needed."""
        protocol = self.fs.protocol
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
        return bool(protocols & OBJECT_STORES)

    def path(self, rel: str | PurePosixPath = "") -> str:
        """The filesystem's path of ``rel``."""
        self.fs  # noqa: B018 -- opening it sets the root
        rel = str(rel).strip("/")
        return f"{self._root}/{rel}" if rel else self._root

    def url(self, rel: str | PurePosixPath = "") -> str:
        """``rel`` as a URI (for messages)."""
        rel = str(rel).strip("/")
        return f"{self.uri}/{rel}" if rel else self.uri

    # ------------------------------------------------------------------ files
    def exists(self, rel: str) -> bool:
        """A file or directory ``rel`` exists."""
        return bool(self.fs.exists(self.path(rel)))

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes; None when it is missing."""
        try:
            return bytes(self.fs.cat_file(self.path(rel)))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace the file ``rel`` with ``data`` (atomically: see :attr:`atomic_put`)."""
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(data)
        try:
            self.put(Path(f.name), rel)
        finally:
            os.unlink(f.name)

    def put(self, local: Path, rel: str) -> None:
        """Upload ``local`` to ``rel``, replacing it atomically."""
        target = self.path(rel)
        if self.atomic_put:
            self.fs.put_file(str(local), target)
            return
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        part = f"{target}.part-{uuid.uuid4().hex[:8]}"
        try:
            self.fs.put_file(str(local), part)
            self.fs.mv(part, target)
        except BaseException:
            with contextlib.suppress(Exception):  # the original error matters
                self.fs.rm_file(part)
            raise

    def get(self, rel: str, local: Path) -> bool:
        """Download ``rel`` to ``local`` (replacing it); False when it is missing."""
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(local.name + ".part")
        try:
            self.fs.get_file(self.path(rel), str(part))
        except FileNotFoundError:
            part.unlink(missing_ok=True)
            return False
        os.replace(part, local)
        return True

    def files(self, rel: str) -> list[str]:
        """Every file under ``rel``, relative to it (none when it does not exist)."""
        base = self.path(rel)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        out = []
        for path in found:
            path = path.rstrip("/")
            if path.startswith(base + "/"):
                out.append(path[len(base) + 1:])
        return sorted(out)

    def rm(self, rel: str) -> None:
        """Delete ``rel`` and everything under it; nothing when it is missing."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.path(rel), recursive=True)

    # ------------------------------------------------------------------ run directories
    def run_is_complete(self, rel: str, steps: int | None) -> bool:
        """The run directory ``rel`` on the storage is complete (its ``summary.json`` says so,
        judged by :func:`explorer_rundir.format.run_is_complete`)."""
        data = self.read_bytes(f"{rel}/{SUMMARY_FILE}")
        if data is None:
            return False
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / SUMMARY_FILE).write_bytes(data)
            return run_is_complete(tmp, steps)

    def checkpoints(self, rel: str) -> list[str]:
        """The complete checkpoints (``step-N`` with their ``meta.json``) of the run ``rel``."""
        return sorted({p.split("/")[0] for p in self.files(f"{rel}/{CHECKPOINTS}")
                       if p.startswith("step-") and p.endswith("/" + META) and p.count("/") == 1})

    def resumable(self, rel: str) -> bool:
        """``train --resume`` can continue the run ``rel``: its config and a complete checkpoint."""
        return self.exists(f"{rel}/{CONFIG_FILE}") and bool(self.checkpoints(rel))

    def move_aside(self, rel: str) -> str:
        """Rename the half-written run directory ``rel`` to ``rel.failed-N``; returns its URI."""
        n = 1
        while self.exists(f"{rel}.failed-{n}"):
            n += 1
        target = f"{rel}.failed-{n}"
        for name in self.files(rel):  # a directory rename is not atomic (nor possible) everywhere
            destination = self.path(f"{target}/{name}")
            if not self.atomic_put:
                self.fs.makedirs(destination.rsplit("/", 1)[0], exist_ok=True)
            self.fs.mv(self.path(f"{rel}/{name}"), destination)
        self.rm(rel)
        return self.url(target)


def read_marker(study: str, name: str) -> str:
    """The text of the marker file ``name`` in ``study`` (a path or a URI), stripped. OSError when
    it cannot be read."""
    if not is_uri(study):
        return (Path(study) / name).read_text(encoding="utf-8").strip()
    try:
        data = Remote(study).read_bytes(name)
    except UsageError as exc:
        raise OSError(str(exc)) from None
    except Exception as exc:  # the filesystem's own errors (credentials, network)
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    if data is None:
        raise FileNotFoundError(f"{study.rstrip('/')}/{name} does not exist")
    return data.decode("utf-8", errors="replace").strip()


# --------------------------------------------------------------------------- the driver's side
@dataclass
class StudyStorage:
    """The study directory as the driver sees it: ``local`` holds the driver's files (for a plain
    path it *is* the study directory); ``remote`` is the storage for a URI, else None."""

    local: Path
    remote: Remote | None = None
    _status_pushed: float = field(default=0.0, repr=False)

    @property
    def where(self) -> str:
        """The study as the user named it (URI or absolute path)."""
        return self.remote.uri if self.remote is not None else str(self.local)

    def relpath(self, path: Path) -> str:
        """``path`` (under :attr:`local`) relative to the study, ``/``-separated."""
        return PurePosixPath(path.relative_to(self.local)).as_posix()

    def run_is_complete(self, rel: str, steps: int | None) -> bool:
        """Whether the run directory ``rel`` is complete where runs write it."""
        if self.remote is not None:
            return self.remote.run_is_complete(rel, steps)
        return run_is_complete(self.local / rel, steps)

    def has_runs(self) -> bool:
        """Any run directory exists."""
        if self.remote is not None:
            return bool(self.remote.files("runs"))
        return (self.local / "runs").exists()

    def pull(self) -> None:
        """Replace the driver's copies of ``study.json`` and ``status.jsonl`` with the storage's
        (a study continued from another machine); a file the storage lacks is removed here."""
        if self.remote is None:
            return
        for name in ("study.json", "status.jsonl"):
            if not self.remote.get(name, self.local / name):
                (self.local / name).unlink(missing_ok=True)

    def push(self, *rels: str) -> None:
        """Upload the driver's files or directories ``rels`` (relative to the study)."""
        if self.remote is None:
            return
        for rel in rels:
            path = self.local / rel
            if path.is_dir():
                for file in sorted(p for p in path.rglob("*") if p.is_file()):
                    self.remote.put(file, self.relpath(file))
            elif path.is_file():
                self.remote.put(path, rel)

    def push_status(self, event: str = "") -> None:
        """Upload ``status.jsonl``: at once, or for a heartbeat at most every :data:`STATUS_PUSH_S`."""
        if self.remote is None:
            return
        now = time.monotonic()
        if event == "heartbeat" and now - self._status_pushed < STATUS_PUSH_S:
            return
        self._status_pushed = now
        try:
            self.remote.put(self.local / "status.jsonl", "status.jsonl")
        except Exception as exc:  # the storage is slow or gone for a moment: the next event retries
            log.warning("could not upload status.jsonl to %s: %s", self.remote.uri, exc)
            self._status_pushed = 0.0

    def write_marker(self, name: str, token: str) -> str:
        """Write the preflight's marker; returns where nodes read it (a path or the URI)."""
        if self.remote is not None:
            self.remote.write_bytes(name, (token + "\n").encode("utf-8"))
            return self.remote.uri
        from explorer_rundir.format import write_text_atomic

        write_text_atomic(self.local / name, token + "\n")
        return str(self.local)

    def remote_run(self, job: Job) -> RemoteRun | None:
        """What a worker needs to train ``job`` in its own directory and sync it; None for a path."""
        if self.remote is None:
            return None
        config = job.arguments[job.arguments.index("--config") + 1]
        return RemoteRun(self.remote.uri, self.relpath(job.run_dir), self.relpath(job.log_path),
                         self.relpath(Path(config)))


def open_study(out: str | Path) -> StudyStorage:
    """The study at ``out``: a URI (the driver's files go to :func:`cache_dir`) or a path."""
    if is_uri(str(out)):
        remote = Remote(str(out))
        remote.fs  # noqa: B018 -- an unknown protocol or a missing package is bad input now
        local = cache_dir(remote.uri) / "driver"
        local.mkdir(parents=True, exist_ok=True)
        return StudyStorage(local, remote)
    return StudyStorage(Path(out).resolve())


def local_copy(out: str | Path, *, run_files: tuple[str, ...] = REPORT_FILES) -> Path:
    """A directory to read the study at ``out`` from: ``out`` itself for a path; for a URI a fresh
    copy of its ``study.json``, ``status.jsonl`` and ``run_files`` of each run (``summary.json``,
    ``metrics.csv`` and ``updates.jsonl`` for the report, ``summary.json`` for the status)."""
    if not is_uri(str(out)):
        return Path(out)
    remote = Remote(str(out))
    view = cache_dir(remote.uri) / f"view-{os.getpid()}"  # one per process: a status beside a report
    shutil.rmtree(view, ignore_errors=True)
    view.mkdir(parents=True)
    for name in STUDY_FILES:
        remote.get(name, view / name)
    if not (view / "study.json").is_file():
        raise UsageError(f"{remote.uri!r} holds no ablation study (no study.json); "
                         "create one with: llm-explorer ablate SPEC --out URI")
    if run_files:
        study = json.loads((view / "study.json").read_text(encoding="utf-8"))
        for info in (study.get("runs") or {}).values():
            rel = str(info.get("dir") or "")
            for name in run_files if rel else ():
                remote.get(f"{rel}/{name}", view / rel / name)
    return view


def upload_report(uri: str, view: Path, files: Any) -> Any:
    """Upload the report ``files`` written into ``view`` (:func:`local_copy` of ``uri``) to the
    storage; returns ``files`` with their URIs instead of their local paths."""
    remote = Remote(uri)

    def send(path: Path) -> str:
        rel = PurePosixPath(path.relative_to(view)).as_posix()
        remote.put(path, rel)
        return remote.url(rel)

    return replace(files, summary_csv=send(files.summary_csv), report_md=send(files.report_md),
                   figures=tuple(send(path) for path in files.figures))


# --------------------------------------------------------------------------- the worker's side
@dataclass(frozen=True)
class RemoteRun:
    """One run of a study on a URI, as its Ray task gets it (relative paths in the storage)."""

    uri: str
    run: str
    log: str
    config: str


class RunSync:
    """A run of a study on a URI, on one worker: :meth:`prepare` downloads the newest uploaded state
    of the run into this node's scratch directory; :meth:`sync` uploads it back at each new
    checkpoint; :meth:`finish` uploads the rest (``summary.json`` last) and clears the scratch copy."""

    def __init__(self, spec: RemoteRun, job: Job, node: str = "") -> None:
        self.spec, self.remote = spec, Remote(spec.uri)
        base = scratch_root() / _key(self.remote.uri) / (node[:16] or "node")
        self.run_dir, self.log_path, self.config = base / spec.run, base / spec.log, base / spec.config
        arguments = list(job.arguments)
        arguments[arguments.index("--config") + 1] = str(self.config)
        arguments[arguments.index("--out") + 1] = str(self.run_dir)
        self.job = replace(job, run_dir=self.run_dir, log_path=self.log_path, arguments=tuple(arguments))
        self.moved_aside: str | None = None
        self.resumed_from: list[str] = []
        self._sent: dict[str, tuple[int, int]] = {}
        self._checkpoints: set[str] = set()

    def complete(self) -> bool:
        """The run is complete on the storage."""
        return self.remote.run_is_complete(self.spec.run, self.job.steps)

    def prepare(self) -> Job:
        """Fetch the run's configuration, log and, when the storage holds a resumable run
        directory, that directory; a half-written one without a checkpoint is moved aside on the
        storage. Returns the job with this node's paths."""
        shutil.rmtree(self.run_dir, ignore_errors=True)  # an older attempt's copy on this node: the storage decides
        self.config.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)
        if not self.remote.get(self.spec.config, self.config):
            raise RuntimeError(f"{self.remote.url(self.spec.config)} is missing: the study storage lost "
                               "the run's configuration")
        self.remote.get(self.spec.log, self.log_path)
        if self.remote.resumable(self.spec.run):
            self.resumed_from = self.remote.checkpoints(self.spec.run)
            for name in self.remote.files(self.spec.run):
                if "/.partial-" in f"/{name}" or ".part-" in name:
                    continue
                local = self.run_dir / name
                self.remote.get(f"{self.spec.run}/{name}", local)
                self._sent[name] = _stamp(local)
            self._checkpoints = set(self.resumed_from)
        elif self.remote.files(self.spec.run):
            self.moved_aside = self.remote.move_aside(self.spec.run)
        return self.job

    def _local_checkpoints(self) -> list[str]:
        root = self.run_dir / CHECKPOINTS
        try:
            return sorted(p.name for p in root.iterdir() if p.name.startswith("step-") and (p / META).is_file())
        except OSError:
            return []

    def sync(self, *, final: bool = False) -> bool:
        """Upload the run directory when a checkpoint completed since the last upload (always
        when ``final``): changed files, then the new checkpoints (``meta.json`` last), then drop
        checkpoints the run pruned. With ``final`` also the log and ``summary.json`` (last).
        Returns whether it uploaded."""
        done = self._local_checkpoints()  # before reading the other files: they are at least as new
        new = [name for name in done if name not in self._checkpoints]
        if not new and not final:
            return False
        rel = self.spec.run
        for file in self._files():
            name = PurePosixPath(file.relative_to(self.run_dir)).as_posix()
            if name.startswith(CHECKPOINTS + "/") or name == SUMMARY_FILE:
                continue
            self._send(file, name)
        for checkpoint in new:
            folder = self.run_dir / CHECKPOINTS / checkpoint
            try:
                files = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.name == META)
                for file in files:
                    self._send(file, PurePosixPath(file.relative_to(self.run_dir)).as_posix(), strict=True)
            except FileNotFoundError:  # pruned by train while it was being sent: a newer one exists
                continue
            self._checkpoints.add(checkpoint)
        if done:
            keep = set(done)
            for stale in sorted(self._checkpoints - keep):
                if not (self.run_dir / CHECKPOINTS / stale).exists():
                    self.remote.rm(f"{rel}/{CHECKPOINTS}/{stale}")
                    self._checkpoints.discard(stale)
        if final:
            if self.log_path.is_file():
                self.remote.put(self.log_path, self.spec.log)
            summary = self.run_dir / SUMMARY_FILE
            if summary.is_file():
                self._send(summary, SUMMARY_FILE)
        return True

    def _files(self) -> list[Path]:
        try:
            return sorted(p for p in self.run_dir.rglob("*") if p.is_file() and ".partial-" not in str(p)
                          and not p.name.endswith(".part") and p.name != ".lock")
        except OSError:
            return []

    def _send(self, file: Path, name: str, *, strict: bool = False) -> None:
        try:
            stamp = _stamp(file)
        except FileNotFoundError:
            if strict:
                raise
            return
        if self._sent.get(name) == stamp:
            return
        try:
            self.remote.put(file, f"{self.spec.run}/{name}")
        except FileNotFoundError:  # removed while being sent (a temporary file of train's)
            if strict:
                raise
            return
        self._sent[name] = stamp

    def finish(self, *, clear: bool) -> None:
        """Upload what is left (:meth:`sync` ``final``); ``clear`` removes this node's copy."""
        self.sync(final=True)
        if clear:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            self.config.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)


def _stamp(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns
