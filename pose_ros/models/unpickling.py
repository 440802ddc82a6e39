"""Reading the ``meta`` of hash-verified published checkpoints without running code from them.

mmpose files are ``{"meta": ..., "state_dict": ...}``. mmengine (and mmcv before it) fills
``meta`` with whatever the training run had: numbers and strings, numpy arrays and scalars
(``dataset_meta``: sigmas, colours), and sometimes instances of mmengine / mmcv classes (config
dicts, history buffers). ``torch.load(weights_only=True)`` refuses the latter, so those files need
a more lenient unpickler, which this module provides for files whose sha256 prefix matched their
registry entry (:func:`load_trusted`); files given by path keep the strict loader.

Lenient does not mean trusting: the unpickler never imports a module named in the file.
``find_class`` answers

* with the real object for an allow-list of data types: torch's own ``weights_only`` list (tensor
  and storage rebuilding), numpy's array / scalar / dtype reconstruction, plain builtin,
  ``collections`` and ``datetime`` containers;
* with a refusal (:class:`RefusedGlobal`) for anything else from the standard library, torch,
  numpy or pose_ros: these are the callables a malicious ``__reduce__`` would use (``os.system``,
  ``builtins.exec``, ``subprocess.Popen``, ``torch.load``, ...), and no genuine metadata holds them;
* with an inert placeholder class for every other name (``mmengine.config.config.ConfigDict``,
  ...): calling it, instantiating it or setting its state only records the arguments.

So no code from the file runs, whatever the hash check says: an 8-digit sha256 prefix is a
consistency check, not a signature.
"""

from __future__ import annotations

import _compat_pickle
import collections
import datetime
import io
import pickle
import sys
import types
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "REQUIRED_TORCH_GLOBALS",
    "RefusedGlobal",
    "TorchAllowListError",
    "UnresolvedObject",
    "load_trusted",
    "torch_allow_list_problem",
    "torch_weights_only_globals",
]


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a callable that could run code (``module.name`` in the message)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class UnresolvedObject:
    """Inert stand-in for an object of a class this loader does not import.

    Subclasses are made per pickled name (``pickled_as`` holds ``"module.Name"``). Whatever the
    pickle does with it (call it as a function, create an instance, set its state, fill it like a
    dict or a list) is recorded in ``args``, ``state``, ``items`` and ``elements``; nothing runs.
    """

    pickled_as = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> UnresolvedObject:
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, items={}, elements=[])
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ kept the arguments; nothing else to do

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["items"][key] = value

    def append(self, value: Any) -> None:
        self.__dict__["elements"].append(value)

    def extend(self, values: Any) -> None:
        self.__dict__["elements"].extend(values)

    def __repr__(self) -> str:
        return f"<unresolved {self.pickled_as}>"


def _numpy_globals() -> dict[str, Any]:
    """numpy's reconstruction functions and types, under numpy 1 and numpy 2 module names."""
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray

    allowed: dict[str, Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[f"{module}._reconstruct"] = multiarray._reconstruct
        allowed[f"{module}.scalar"] = multiarray.scalar
    allowed["numpy.ndarray"] = np.ndarray
    allowed["numpy.dtype"] = np.dtype
    for name in dir(np.dtypes):
        if name.endswith("DType") and name not in ("ObjectDType", "StringDType"):
            allowed[f"numpy.dtypes.{name}"] = getattr(np.dtypes, name)
    return allowed


#: What this loader needs from torch's weights_only allow-list: the functions that rebuild tensors,
#: parameters and storages from a ``torch.save`` file, and the containers of a state_dict.
REQUIRED_TORCH_GLOBALS: tuple[str, ...] = (
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "torch.FloatStorage",
    "torch.Size",
    "torch.float32",
    "collections.OrderedDict",
)


class TorchAllowListError(RuntimeError):
    """This PyTorch does not offer the weights_only allow-list in the form this loader reads."""


def torch_allow_list_problem(allowed: object, torch_version: str) -> str | None:
    """Why ``allowed`` (what torch's allow-list accessor returned) cannot serve this loader, in
    one sentence naming the torch version; None when it holds every
    :data:`REQUIRED_TORCH_GLOBALS` entry."""
    if not isinstance(allowed, dict):
        return (
            f"torch {torch_version}: torch._weights_only_unpickler._get_allowed_globals() returned "
            f"{type(allowed).__name__}, not a dict of names; pose_ros's restricted checkpoint "
            "loader needs updating for this PyTorch (or use a PyTorch between 2.5 and 2.14)"
        )
    missing = [name for name in REQUIRED_TORCH_GLOBALS if name not in allowed]
    if missing:
        return (
            f"torch {torch_version}: the weights_only allow-list lacks {', '.join(missing)}; "
            "pose_ros's restricted checkpoint loader needs updating for this PyTorch (or use a "
            "PyTorch between 2.5 and 2.14)"
        )
    return None


def torch_weights_only_globals() -> dict[str, Any]:
    """torch's own allow-list of its weights_only unpickler (tensor and storage rebuilding).

    PyTorch has no public accessor for it: ``torch.serialization.get_safe_globals()`` returns
    only the globals added with ``add_safe_globals`` (plus builtin exception types), not the
    tensor-rebuilding functions. So it is read from the private
    ``torch._weights_only_unpickler._get_allowed_globals()`` (PyTorch 2.5 to 2.14 at least), and
    checked: a PyTorch where it moved or changed raises :class:`TorchAllowListError` saying so,
    rather than a KeyError deep inside a checkpoint load.
    """
    module = getattr(torch, "_weights_only_unpickler", None)
    accessor = getattr(module, "_get_allowed_globals", None)
    if accessor is None:
        raise TorchAllowListError(
            f"torch {torch.__version__} has no torch._weights_only_unpickler."
            "_get_allowed_globals(); pose_ros's restricted checkpoint loader needs updating for "
            "this PyTorch (or use a PyTorch between 2.5 and 2.14)"
        )
    allowed = accessor()
    problem = torch_allow_list_problem(allowed, torch.__version__)
    if problem is not None:
        raise TorchAllowListError(problem)
    return dict(allowed)


def _allowed_globals() -> dict[str, Any]:
    allowed = torch_weights_only_globals()
    allowed.update(_numpy_globals())
    # Data types only: constructing one runs no code chosen by the file.
    for cls in (list, dict, tuple, set, frozenset, int, float, complex, str, bytes, bytearray):
        allowed[f"builtins.{cls.__name__}"] = cls
    allowed["builtins.bool"] = bool
    allowed["builtins.slice"] = slice
    allowed["builtins.range"] = range
    for cls in (
        collections.OrderedDict,
        collections.defaultdict,
        collections.Counter,
        collections.deque,
    ):
        allowed[f"collections.{cls.__name__}"] = cls
    for cls in (
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        datetime.timezone,
    ):
        allowed[f"datetime.{cls.__name__}"] = cls
    return allowed


_ALLOWED: dict[str, Any] | None = None
# Names from these (besides the allow-list) are refused rather than made inert: they are where
# code-running callables live, and genuine checkpoint metadata never names them.
_REFUSED_ROOTS = (
    frozenset(sys.stdlib_module_names)
    | {m.split(".")[0] for m in _compat_pickle.IMPORT_MAPPING}  # Python 2 names, in case
    | {"torch", "numpy", "pose_ros", "__main__"}
)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler resolving globals by the rules in the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._placeholders: dict[str, type[UnresolvedObject]] = {}

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        # Protocol 2 pickles name Python 2 modules (``__builtin__.exec``); the stock find_class
        # maps them to Python 3 ones, and so must this one, or a refusal could be bypassed.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        qualified = f"{module}.{name}"
        if qualified in _ALLOWED:
            return _ALLOWED[qualified]
        if module.split(".", 1)[0] in _REFUSED_ROOTS:
            raise RefusedGlobal(module, name)
        placeholder = self._placeholders.get(qualified)
        if placeholder is None:
            placeholder = type(
                name if name.isidentifier() else "Unresolved",
                (UnresolvedObject,),
                {"pickled_as": qualified, "__module__": __name__},
            )
            self._placeholders[qualified] = placeholder
        return placeholder


def _load(file: IO[bytes], **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) uses the module's ``Unpickler`` for the data and its ``load`` for
# the small records around it (legacy format), so both go through the restricted rules.
_PICKLE_MODULE = types.ModuleType("pose_ros_restricted_pickle")
_PICKLE_MODULE.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
_PICKLE_MODULE.load = _load  # type: ignore[attr-defined]


def load_trusted(data: bytes, map_location: str | torch.device = "cpu") -> Any:
    """Unpickle a ``torch.save`` file's bytes (zip or legacy format) by the restricted rules.

    Call it only with bytes whose hash matched a registry entry (the caller's check).

    Raises:
        RefusedGlobal: the pickle names a code-running callable (nothing was called).
        TorchAllowListError: this PyTorch's weights_only allow-list is not where or what it was.
        Exception: whatever torch raises for a corrupt file.
    """
    return torch.load(
        io.BytesIO(data),
        map_location=map_location,
        weights_only=False,  # our own unpickler restricts instead (see module docstring)
        pickle_module=_PICKLE_MODULE,
    )
