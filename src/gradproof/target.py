"""Load the code and the parameters that ``gradproof check`` is pointed at.

The command line names a *target* (a Python file or an importable module), the
loss and gradient functions in it, and where the parameters come from: a
parameter file or a function of the target that returns them.

Parameter files are data, not code: ``.npz`` and ``.npy`` files are read with
pickling disabled and ``.pt`` files with ``torch.load(..., weights_only=True)``,
so a file that would need arbitrary objects unpickled is refused.

Errors are of two kinds. A target, name or file that cannot be used raises
:class:`TargetError` (an :class:`~gradproof.errors.InputError`) whose message
says what to fix. An exception raised by the user's own code, on import or in
the parameter function, raises :class:`~gradproof.errors.UserCodeError` chained
to the user's exception; :func:`format_user_traceback` shows its traceback
without gradproof's frames.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import pickle
import sys
import traceback
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from gradproof.errors import InputError, UserCodeError

__all__ = [
    "PARAM_FILE_SUFFIXES",
    "TargetError",
    "format_user_traceback",
    "load_params",
    "load_target",
    "resolve_function",
]

PARAM_FILE_SUFFIXES = (".npz", ".npy", ".pt", ".pth")
"""File suffixes that :func:`load_params` reads as parameter files."""

_PACKAGE_DIR = str(Path(__file__).resolve().parent) + os.sep
_counter = itertools.count()


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
        The user's code raised an exception while it was imported; the
        exception is chained as ``__cause__``.
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
            raise UserCodeError(
                f"importing {target!r} raised {type(exc).__name__}: {exc}", function="import"
            ) from exc
        except Exception as exc:
            raise UserCodeError(
                f"importing {target!r} raised {type(exc).__name__}: {exc}", function="import"
            ) from exc


def _import_file(path: Path) -> ModuleType:
    """Import a ``.py`` file under a fresh module name."""
    name = f"_gradproof_target_{path.stem.replace('-', '_')}_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TargetError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and the like look modules up here
    with _on_sys_path(str(path.parent)):
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            del sys.modules[name]
            raise UserCodeError(
                f"importing {path.name} raised {type(exc).__name__}: {exc}", function="import"
            ) from exc
    return module


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
    """
    value: Any = module
    for part in name.split("."):
        if not hasattr(value, part):
            defined = ", ".join(_public_functions(module)) or "no public functions"
            raise TargetError(
                f"the {role} function {name!r} is not defined in {_describe(module)} "
                f"(it defines: {defined})"
            )
        value = getattr(value, part)
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
        if module.__name__.startswith("_gradproof_target_") and file
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
        The file is missing, unreadable, or holds pickled objects; or the
        function does not exist.
    UserCodeError
        The parameter function raised an exception (chained as ``__cause__``).
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
    except Exception as exc:
        raise UserCodeError(
            f"the parameter function {source!r} raised {type(exc).__name__}: {exc}",
            function="params",
        ) from exc


_PICKLE_REFUSED = (
    "{file} holds pickled Python objects, and gradproof reads parameter files as data, "
    "never as code: save plain numeric arrays instead ({how})"
)


def _load_numpy(path: Path) -> Any:
    """Read a ``.npz`` or ``.npy`` file with pickling disabled."""
    how = "np.savez(path, **arrays) with numeric arrays"
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
