"""Event handlers with the app's settings bound in: `bind(fn, settings=settings)` is `fn` with that keyword fixed,
its signature otherwise kept (Gradio reads it to pass gr.Request and event data, to stream generators, and to
document the public API)."""
from __future__ import annotations

import functools
import inspect
import typing


def bind(fn, **bound):
    """`fn` with the keyword arguments `bound` fixed; a generator function stays one."""
    signature = inspect.signature(fn)
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return (yield from fn(*args, **kwargs, **bound))
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs, **bound)
    wrapper.__signature__ = signature.replace(
        parameters=[p for p in signature.parameters.values() if p.name not in bound])
    try:  # resolved here, where fn's module names them: Gradio finds gr.Request by its type
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError):
        hints = dict(fn.__annotations__)
    wrapper.__annotations__ = {name: hint for name, hint in hints.items() if name not in bound}
    del wrapper.__wrapped__  # callers see the bound signature, not fn's
    return wrapper
