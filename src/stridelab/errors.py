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


def choose(kind: str, value: str, options) -> str:
    """Return ``value`` if it is one of ``options``, else raise a ConfigError that lists them."""
    options = list(options)
    if value not in options:
        raise ConfigError(
            f"Unknown {kind} {value!r}. Valid {kind} values are: {', '.join(map(str, options))}. "
            f"Pick one of these in your config or override (for example {kind.split()[-1]}={options[0]})."
        )
    return value
