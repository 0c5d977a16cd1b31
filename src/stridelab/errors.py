"""User-facing errors.

Every error a researcher can cause by a config choice or by the files on disk derives from
:class:`StridelabError`. Its message is one paragraph that says what was wrong and what to do;
the CLI prints it without a traceback (set ``STRIDELAB_TRACEBACK=1`` to see one).
"""


class StridelabError(Exception):
    """Base class: a problem the user can fix; the message says how."""


class ConfigError(StridelabError):
    """An option value that does not exist or does not fit with the others."""


class GeometryError(StridelabError):
    """A network that cannot process the configured input size (map too small, pad too large)."""


class DataError(StridelabError):
    """Missing, corrupt or unobtainable data (no network, bad checksum, truncated file)."""


class WriteError(StridelabError):
    """A file stridelab had to write could not be written (full disk, quota, read-only folder)."""

    def __init__(self, path, err: OSError, atomic: bool = True) -> None:
        self.path, self.errno = str(path), err.errno
        cause = err.strerror or str(err)
        kept = (
            "Nothing was left half-written: the file is either its previous version or absent."
            if atomic  # stridelab's own writes; a logger's event or CSV file is appended to in place
            else "Its end may be cut short; metrics.json and the checkpoints, written whole, are not."
        )
        super().__init__(
            f"could not write {self.path}: {cause} (errno {err.errno}). {kept} Free space or raise the quota "
            "on that disk, or write elsewhere (paths.log_dir=/a/writable/folder, or hydra.run.dir / "
            "hydra.sweep.dir), then run the same command again: finished runs are skipped and unfinished ones "
            "resume from their last checkpoint."
        )


class RunDiverged(StridelabError):
    """The training loss became non-finite or exploded (:class:`stridelab.training.Classifier`). The run
    is recorded as ``diverged``, not ``failed``: its config ran as written, and the tables list it apart."""

    status = "diverged"


class RunInterrupted(BaseException):
    """The run was stopped by a signal (SIGTERM, SIGINT, SIGUSR1). A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way up mistakes it for a failure."""

    def __init__(self, signame: str, checkpoint: str | None = None) -> None:
        self.signame, self.checkpoint = signame, checkpoint
        super().__init__(signame)

    def reason(self) -> str:
        """The one paragraph metrics.json and the console give."""
        where = (
            f"its checkpoint {self.checkpoint} holds the progress"
            if self.checkpoint
            else "it had no checkpoint yet and will start from epoch 0"
        )
        return (
            f"interrupted by {self.signame} before the run finished; {where}. Run the same command again "
            "(the same sweep or study into the same folder, or hydra.run.dir=<this run's folder>) to resume it."
        )

    @property
    def exit_status(self) -> int:
        import signal

        return 128 + int(getattr(signal, self.signame, signal.SIGTERM))


def choose(kind: str, value: str, options) -> str:
    """Return ``value`` if it is one of ``options``, else raise a ConfigError that lists them."""
    options = list(options)
    if value not in options:
        raise ConfigError(
            f"Unknown {kind} {value!r}. Valid {kind} values are: {', '.join(map(str, options))}. "
            f"Pick one of these in your config or override (for example {kind.split()[-1]}={options[0]})."
        )
    return value
