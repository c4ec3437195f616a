"""Named-axis shape checks: ``check_shape(scores, "batch heads query key")``.

Most attention bugs are shape bugs that NumPy broadcasting hides (a missing transpose, heads
merged in the wrong order). Naming the axes turns them into an error that says which axis
disagrees. Works with anything that has a ``.shape`` (NumPy arrays, TensorFlow tensors) or
with array_like input; this module imports only NumPy.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_shape"]

_ELLIPSIS = "..."


def _parse(spec: str) -> list[str | int]:
    if not isinstance(spec, str):
        raise ValueError(f"`spec` must be a string of axis names like 'batch time features'; got {spec!r}.")
    tokens: list[str | int] = []
    for token in spec.split():
        if token == _ELLIPSIS:
            if _ELLIPSIS in tokens:
                raise ValueError(f"`spec` {spec!r} may contain '...' only once.")
            tokens.append(token)
        elif token.isdigit():
            tokens.append(int(token))
        elif token.isidentifier():
            tokens.append(token)
        else:
            raise ValueError(
                f"`spec` {spec!r} has an invalid axis {token!r}: use names (identifiers), "
                "integer sizes or '...'."
            )
    return tokens


def _shape_of(x) -> tuple:
    shape = getattr(x, "shape", None)
    if shape is None:
        shape = np.shape(x)
    # Unknown sizes (None in a symbolic TensorFlow shape) stay None and match anything.
    return tuple(None if d is None else int(d) for d in shape)


def check_shape(x, spec: str, name: str = "x", **known: int) -> dict[str, int]:
    """Check that ``x`` has the axes named in ``spec`` and return their sizes.

    Parameters
    ----------
    x : array_like or tensor
        Anything with a ``.shape``, or nested sequences.
    spec : str
        Space-separated axis names, e.g. ``"batch heads query key"``. An integer such as
        ``3`` requires exactly that size; ``...`` (at most once) stands for any number of
        axes, which are not bound. A name used twice must have the same size both times.
    name : str, default "x"
        How ``x`` is called in error messages.
    **known : int
        Sizes the axes must have, e.g. ``key=6``. Names that do not occur in ``spec`` are
        ignored, so the binding of one check can be passed on to the next:
        ``check_shape(k, "batch heads key dim", name="k", **check_shape(q, ...))``.

    Returns
    -------
    dict[str, int]
        ``{axis name: size}`` for every named axis of ``spec`` (and of ``known``).

    Raises
    ------
    ValueError
        If ``x`` has the wrong number of axes, or an axis disagrees with a literal size,
        a ``known`` size or an earlier axis of the same name. The message names the axis,
        its position, both sizes, the shape and the spec.

    Examples
    --------
    >>> import numpy as np
    >>> check_shape(np.zeros((2, 4, 5, 7)), "batch heads query key")
    {'batch': 2, 'heads': 4, 'query': 5, 'key': 7}
    >>> check_shape(np.zeros((2, 4, 5, 7)), "batch heads query key", key=6)
    Traceback (most recent call last):
    ...
    ValueError: axis 'key' (position 3) has size 7 but key=6 was expected; x has shape (2, 4, 5, 7) for spec 'batch heads query key'
    """
    tokens = _parse(spec)
    for axis, size in known.items():
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"known size {axis}={size!r} must be a non-negative int.")
    shape = _shape_of(x)
    where = f"{name} has shape {shape} for spec {spec!r}"

    if _ELLIPSIS in tokens:
        cut = tokens.index(_ELLIPSIS)
        head, tail = tokens[:cut], tokens[cut + 1:]
        if len(shape) < len(head) + len(tail):
            raise ValueError(
                f"{name} has {len(shape)} axes but spec {spec!r} needs at least "
                f"{len(head) + len(tail)}; {name} has shape {shape}"
            )
        positions = list(range(len(head))) + list(range(len(shape) - len(tail), len(shape)))
        named = head + tail
    else:
        if len(shape) != len(tokens):
            raise ValueError(
                f"{name} has {len(shape)} axes but spec {spec!r} names {len(tokens)}; "
                f"{name} has shape {shape}"
            )
        positions = list(range(len(tokens)))
        named = tokens

    binding: dict[str, int] = {k: int(v) for k, v in known.items()}
    bound_at: dict[str, int] = {}
    for axis, pos in zip(named, positions):
        size = shape[pos]
        if isinstance(axis, int):
            if size is not None and size != axis:
                raise ValueError(f"axis at position {pos} has size {size} but {axis} was expected; {where}")
            continue
        if size is None:
            continue
        if axis in bound_at:
            if size != binding[axis]:
                raise ValueError(
                    f"axis '{axis}' (position {pos}) has size {size} but '{axis}' has size "
                    f"{binding[axis]} at position {bound_at[axis]}; {where}"
                )
        elif axis in binding:
            if size != binding[axis]:
                raise ValueError(
                    f"axis '{axis}' (position {pos}) has size {size} but {axis}={binding[axis]} "
                    f"was expected; {where}"
                )
            bound_at[axis] = pos
        else:
            binding[axis] = size
            bound_at[axis] = pos
    return binding
