"""Load the code and the parameters that ``gradproof check`` is pointed at.

The command line names a *target* (a Python file or an importable module), the
loss and gradient functions in it, and where the parameters come from: a
parameter file or a function of the target that returns them.

Parameter files are data, not code: ``.npz`` and ``.npy`` files are read with
pickling disabled and ``.pt`` files with ``torch.load(..., weights_only=True)``,
so a file that would need arbitrary objects unpickled is refused. The header of
every ``.npy`` array (alone or inside an ``.npz``) is read first, and a file
that claims more than :data:`MAX_PARAM_FILE_BYTES` is refused before any
memory is allocated for it.

Errors are of two kinds. A target, name or file that cannot be used raises
:class:`TargetError` (an :class:`~gradproof.errors.InputError`) whose message
says what to fix. An exception raised by the user's own code, on import or in
the parameter function, raises :class:`~gradproof.errors.UserCodeError` chained
to the user's exception; :func:`format_user_traceback` shows its traceback
without gradproof's frames. A ``sys.exit()`` in the user's code is such an
exception too: it never ends the caller's process (:func:`exit_call` words it).
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import math
import os
import pickle
import sys
import traceback
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import numpy as np

from gradproof.errors import InputError, UserCodeError

__all__ = [
    "MAX_PARAM_FILE_BYTES",
    "PARAM_FILE_SUFFIXES",
    "TargetError",
    "exit_call",
    "format_user_traceback",
    "load_params",
    "load_target",
    "resolve_function",
    "send_by_value",
]

PARAM_FILE_SUFFIXES = (".npz", ".npy", ".pt", ".pth")
"""File suffixes that :func:`load_params` reads as parameter files."""

MAX_PARAM_FILE_BYTES = 4 * 2**30
"""The most memory (4 GiB) the arrays of one ``.npy`` or ``.npz`` file may claim.

The claim is read from the arrays' headers, before anything is allocated, so
a corrupt or hostile header (a shape of ``(10**12,)`` in a tiny file) is
refused with a message instead of exhausting the machine's memory.
"""

_PACKAGE_DIR = str(Path(__file__).resolve().parents[1]) + os.sep  # gradproof/, not cli/
_counter = itertools.count()
_FILE_MODULE_PREFIX = "_gradproof_target_"


class TargetError(InputError):
    """A target, function name or parameter file that ``gradproof check`` cannot use.

    The message is one line that names what to fix.
    """


@contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    """Put `folder` first on ``sys.path`` for the duration of the block."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _is_user_frame(filename: str) -> bool:
    """Whether a traceback frame is the user's code (not gradproof's, not the importer's)."""
    if filename.startswith("<frozen importlib"):
        return False
    try:
        resolved = str(Path(filename).resolve())
    except (OSError, ValueError):
        return True
    return not resolved.startswith(_PACKAGE_DIR)


def _trim(exception: traceback.TracebackException, seen: set[int]) -> None:
    if id(exception) in seen:
        return
    seen.add(id(exception))
    exception.stack = traceback.StackSummary.from_list(
        [frame for frame in exception.stack if _is_user_frame(frame.filename)]
    )
    for chained in (exception.__cause__, exception.__context__):
        if chained is not None:
            _trim(chained, seen)


def format_user_traceback(exception: BaseException) -> str:
    """Format an exception raised by the user's code, without gradproof's own frames.

    Parameters
    ----------
    exception : BaseException
        The user's exception (for a :class:`~gradproof.errors.UserCodeError`,
        its ``__cause__``).

    Returns
    -------
    str
        The traceback as Python prints it, keeping only the frames of the
        user's code (and the libraries it called), ending with a newline.
    """
    formatted = traceback.TracebackException.from_exception(exception)
    _trim(formatted, set())
    return "".join(formatted.format())


def exit_call(exception: SystemExit) -> str:
    """Write the ``sys.exit`` call that raised `exception`, as the user would have typed it.

    Parameters
    ----------
    exception : SystemExit
        The exception that ``sys.exit`` (or ``exit``, ``quit``) raised.

    Returns
    -------
    str
        ``"sys.exit()"`` without an argument, else ``"sys.exit(1)"``,
        ``"sys.exit('bye')"``...

    Examples
    --------
    >>> exit_call(SystemExit()), exit_call(SystemExit(0)), exit_call(SystemExit("bye"))
    ('sys.exit()', 'sys.exit(0)', "sys.exit('bye')")
    """
    return "sys.exit()" if exception.code is None else f"sys.exit({exception.code!r})"


def _import_failed(what: str, exception: BaseException) -> UserCodeError:
    """Return the error for the user's code failing while `what` (a file or module) is imported."""
    if isinstance(exception, SystemExit):
        message = (
            f"your code called {exit_call(exception)} while gradproof imported {what}; "
            'put the script part of the file under `if __name__ == "__main__":` so that '
            "importing it only defines the functions"
        )
    else:
        message = f"importing {what} raised {type(exception).__name__}: {exception}"
    return UserCodeError(message, function="import")


def load_target(target: str) -> ModuleType:
    """Import the user's code: a Python file or an importable module.

    Parameters
    ----------
    target : str
        A path to a ``.py`` file (imported under a unique module name with its
        folder first on ``sys.path`` while it is imported), or a dotted module
        name (imported with the current folder on ``sys.path``).

    Returns
    -------
    ModuleType
        The imported module.

    Raises
    ------
    TargetError
        The file does not exist or the module cannot be found.
    UserCodeError
        The user's code raised an exception, or called ``sys.exit``, while it
        was imported; the exception is chained as ``__cause__``.
    """
    path = Path(target)
    if target.endswith(".py") or os.sep in target or "/" in target:
        if not path.is_file():
            raise TargetError(f"no such Python file: {target}")
        return _import_file(path.resolve())
    with _on_sys_path(os.getcwd()):
        try:
            return importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (target == exc.name or target.startswith(exc.name + ".")):
                raise TargetError(
                    f"cannot find the module {target!r}: give a path to a .py file or the "
                    "name of an importable module"
                ) from None
            raise _import_failed(repr(target), exc) from exc
        except (Exception, SystemExit) as exc:
            raise _import_failed(repr(target), exc) from exc


def _import_file(path: Path) -> ModuleType:
    """Import a ``.py`` file under a fresh module name."""
    name = f"{_FILE_MODULE_PREFIX}{path.stem.replace('-', '_')}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and the like look modules up here
    with _on_sys_path(str(path.parent)):
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # a Ctrl-C too leaves no half-imported module behind
            sys.modules.pop(name, None)
            if isinstance(exc, (Exception, SystemExit)):
                raise _import_failed(path.name, exc) from exc
            raise
    return module


def send_by_value(module: ModuleType) -> bool:
    """Let worker processes receive the functions of a target imported from a file.

    A ``.py`` file is imported under a made-up module name that worker
    processes cannot import, so its functions must travel by value: this
    registers the module with cloudpickle, when it is installed. An importable
    module needs nothing: workers import it by name.

    Parameters
    ----------
    module : ModuleType
        The user's module, from :func:`load_target`.

    Returns
    -------
    bool
        Whether the module's functions can reach worker processes.
    """
    if not module.__name__.startswith(_FILE_MODULE_PREFIX):
        return True
    try:
        cloudpickle: Any = importlib.import_module("cloudpickle")
    except ImportError:
        return False
    cloudpickle.register_pickle_by_value(module)
    return True


def _public_functions(module: ModuleType) -> list[str]:
    return sorted(
        name
        for name, value in vars(module).items()
        if callable(value) and not name.startswith("_") and not isinstance(value, type)
    )


def resolve_function(
    module: ModuleType, name: str, *, role: str = "function"
) -> Callable[..., Any]:
    """Return the callable called `name` in `module`.

    Parameters
    ----------
    module : ModuleType
        The user's module, from :func:`load_target`.
    name : str
        The function's name; a dotted name reaches into attributes
        (``model.loss``).
    role : str, optional
        What the function is for (``"loss"``, ``"grad"``...), for messages.

    Returns
    -------
    callable
        The function.

    Raises
    ------
    TargetError
        There is no such attribute, or it is not callable.
    UserCodeError
        Looking the name up ran the user's code (a module ``__getattr__``, a
        property), which raised or called ``sys.exit``.
    """
    value: Any = module
    for part in name.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            defined = ", ".join(_public_functions(module)) or "no public functions"
            raise TargetError(
                f"the {role} function {name!r} is not defined in {_describe(module)} "
                f"(it defines: {defined})"
            ) from None
        except (Exception, SystemExit) as exc:
            doing = f"looking up the {role} function {name!r} in {_describe(module)}"
            message = (
                f"your code called {exit_call(exc)} while {doing}"
                if isinstance(exc, SystemExit)
                else f"{doing} raised {type(exc).__name__}: {exc}"
            )
            raise UserCodeError(message, function="import") from exc
    if not callable(value):
        raise TargetError(
            f"{name!r} in {_describe(module)} is a {type(value).__name__}, not a function; "
            f"name the {role} function"
        )
    return value  # type: ignore[no-any-return]


def _describe(module: ModuleType) -> str:
    file = getattr(module, "__file__", None)
    return (
        Path(file).name
        if module.__name__.startswith(_FILE_MODULE_PREFIX) and file
        else (module.__name__)
    )


def load_params(source: str, module: ModuleType) -> Any:
    """Load the parameters to check at.

    Parameters
    ----------
    source : str
        A parameter file (``.npz`` or ``.npy``; ``.pt`` or ``.pth`` holding a
        state dict or tensors, when torch is installed), or the name of a
        function of `module` that takes no arguments and returns the parameters.
    module : ModuleType
        The user's module.

    Returns
    -------
    Any
        The parameters: a dict of arrays for ``.npz`` files and state dicts
        (float tensors become float64 numpy copies), an array for ``.npy``
        files, or whatever the function returned.

    Raises
    ------
    TargetError
        The file is missing, unreadable, holds pickled objects or claims more
        than :data:`MAX_PARAM_FILE_BYTES`; or the function does not exist.
    UserCodeError
        The parameter function raised an exception or called ``sys.exit``
        (chained as ``__cause__``).
    """
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix in PARAM_FILE_SUFFIXES:
        if not path.is_file():
            raise TargetError(f"no such parameter file: {source}")
        if suffix in (".npz", ".npy"):
            return _load_numpy(path)
        return _load_torch(path)
    if path.is_file():
        raise TargetError(
            f"cannot read parameters from {source}: use a .npz, .npy or .pt file, or the name "
            "of a function in the target that returns the parameters"
        )
    if not all(part.isidentifier() for part in source.split(".")):
        raise TargetError(
            f"--params {source!r} is neither a parameter file ({', '.join(PARAM_FILE_SUFFIXES)}) "
            "nor the name of a function in the target"
        )
    function = resolve_function(module, source, role="parameter")
    try:
        return function()
    except SystemExit as exc:
        raise UserCodeError(
            f"your code called {exit_call(exc)} in the parameter function {source!r}; it must "
            "return the parameters",
            function="params",
        ) from exc
    except Exception as exc:
        raise UserCodeError(
            f"the parameter function {source!r} raised {type(exc).__name__}: {exc}",
            function="params",
        ) from exc


_PICKLE_REFUSED = (
    "{file} holds pickled Python objects, and gradproof reads parameter files as data, "
    "never as code: save plain numeric arrays instead ({how})"
)


def _format_bytes(count: int) -> str:
    """Write a byte count for people: ``"7.28 TiB"``."""
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{count} bytes" if unit == "bytes" else f"{size:.3g} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _array_claim(stream: IO[bytes], label: str, how: str) -> tuple[str, int]:
    """Read an ``.npy`` header; return what its array claims to be and its bytes.

    Object arrays are refused. Only the header is read: nothing is allocated
    for the array itself.
    """
    formats = np.lib.format
    try:
        version = formats.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = formats.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = formats.read_array_header_2_0(stream)
        else:  # (3, 0): version 2 with a UTF-8 header; numpy has no public reader for it
            read_header: Any = getattr(formats, "_read_array_header", None)
            if read_header is None:
                raise ValueError(f".npy format version {version} is not supported")
            shape, _, dtype = read_header(stream, version)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise TargetError(f"cannot read {label}: not a valid .npy array header ({exc})") from None
    if dtype.hasobject:
        raise TargetError(_PICKLE_REFUSED.format(file=label, how=how))
    shape = tuple(int(n) for n in shape)
    return f"an array of shape {shape} and dtype {dtype}", math.prod(shape) * dtype.itemsize


def _refuse_oversized(path: Path, how: str) -> None:
    """Refuse a ``.npy``/``.npz`` file whose headers claim more than MAX_PARAM_FILE_BYTES."""
    limit = MAX_PARAM_FILE_BYTES
    fix = (
        f"the file itself is {_format_bytes(path.stat().st_size)}: if its header is corrupt, "
        "save the parameters again; if the arrays really are that large, return them from a "
        "function of the target and pass its name to --params"
    )
    claims: list[tuple[str, str, int]] = []
    try:
        if path.suffix.lower() == ".npy":
            with path.open("rb") as stream:
                claims.append((path.name, *_array_claim(stream, path.name, how)))
        else:
            with zipfile.ZipFile(path) as archive:
                for member in archive.infolist():
                    if not member.filename.endswith(".npy"):
                        claims.append((member.filename, "a file", member.file_size))
                        continue
                    label = f"{path.name} (array {member.filename.removesuffix('.npy')!r})"
                    with archive.open(member) as stream:
                        claims.append((label, *_array_claim(stream, label, how)))
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise TargetError(f"cannot read {path.name}: {exc}") from None
    for label, what, claim in claims:
        if claim > limit:
            raise TargetError(
                f"{label} claims {what} ({_format_bytes(claim)}), more than the "
                f"{_format_bytes(limit)} gradproof reads from a parameter file; {fix}"
            )
    total = sum(claim for _, _, claim in claims)
    if total > limit:
        raise TargetError(
            f"the arrays of {path.name} claim {_format_bytes(total)} in all, more than the "
            f"{_format_bytes(limit)} gradproof reads from a parameter file; {fix}"
        )


def _load_numpy(path: Path) -> Any:
    """Read a ``.npz`` or ``.npy`` file with pickling disabled, its size checked first."""
    how = "np.savez(path, **arrays) with numeric arrays"
    _refuse_oversized(path, how)
    try:
        loaded = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise TargetError(_PICKLE_REFUSED.format(file=path.name, how=how)) from None
        raise TargetError(f"cannot read {path.name}: {exc}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise TargetError(f"cannot read {path.name}: {exc}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        params: dict[str, Any] = {}
        for key in loaded.files:
            try:
                params[key] = loaded[key]
            except ValueError as exc:
                if "pickle" in str(exc):
                    raise TargetError(
                        _PICKLE_REFUSED.format(file=f"{path.name} (array {key!r})", how=how)
                    ) from None
                raise TargetError(f"cannot read array {key!r} of {path.name}: {exc}") from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise TargetError(f"cannot read array {key!r} of {path.name}: {exc}") from None
    if not params:
        raise TargetError(f"{path.name} holds no arrays")
    return params


def _load_torch(path: Path) -> Any:
    """Read a ``.pt`` file with ``weights_only=True`` and convert its tensors to numpy."""
    try:
        import torch
    except ImportError:
        raise TargetError(
            f"reading {path.name} needs PyTorch, which is not installed: `pip install torch`, "
            "or save the parameters with np.savez instead"
        ) from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise TargetError(
            _PICKLE_REFUSED.format(
                file=path.name, how="torch.save(model.state_dict(), path) with tensors only"
            )
        ) from None
    except Exception as exc:
        raise TargetError(f"cannot read {path.name}: {type(exc).__name__}: {exc}") from None
    return _to_numpy(loaded, torch)


def _to_numpy(value: Any, torch: ModuleType) -> Any:
    """Convert the tensors of a loaded ``.pt`` file to numpy arrays (floats in float64)."""
    if isinstance(value, torch.Tensor):
        array = value.detach().cpu()
        if array.is_floating_point():
            return array.to(torch.float64).numpy().copy()
        return array.numpy().copy()
    if isinstance(value, Mapping):
        return {str(key): _to_numpy(item, torch) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_numpy(item, torch) for item in value]
    return value
