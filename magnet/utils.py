"""Small helpers shared across the library."""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    On any exception the temporary file is removed, so a crash never leaves a half-written file at ``path``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    try:
        yield tmp
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    os.replace(tmp, final)


def require_bool(name: str, value: Any) -> bool:
    """``value`` if it is a boolean (``true`` / ``false`` in a config), else a one-line
    :class:`magnet.errors.ConfigError` naming ``name`` (``overwrite=abc`` must not read as true)."""
    from magnet.errors import ConfigError

    if isinstance(value, bool):
        return value
    if type(value).__name__ == "bool_":  # numpy's
        return bool(value)
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def require_number(name: str, value: Any, *, integer: bool = False, minimum: float | None = None,
                   above: float | None = None, maximum: float | None = None, below: float | None = None,
                   hint: str = "") -> int | float:
    """``value`` as an int (``integer``) or float, or a one-line :class:`magnet.errors.ConfigError` naming ``name``.

    Bounds: ``minimum`` / ``maximum`` inclusive, ``above`` / ``below`` exclusive. Booleans and strings are refused
    (``lr=abc``); an integral float is accepted where an int is required (``1e5``). ``hint`` ends the message.
    """
    from magnet.errors import ConfigError

    bounds = [f">= {minimum:g}" if minimum is not None else "", f"> {above:g}" if above is not None else "",
              f"<= {maximum:g}" if maximum is not None else "", f"< {below:g}" if below is not None else ""]
    wanted = " and ".join(b for b in bounds if b)
    kind = "an integer" if integer else "a number"
    message = f"{name} must be {kind}{' ' + wanted if wanted else ''}, got {value!r}{'; ' + hint if hint else ''}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigError(message)
    if integer:
        if float(value) != int(value):
            raise ConfigError(message)
        value = int(value)
    else:
        value = float(value)
    if ((minimum is not None and value < minimum) or (above is not None and value <= above)
            or (maximum is not None and value > maximum) or (below is not None and value >= below)):
        raise ConfigError(message)
    return value
