"""Which ATen operators a piece of code calls, whoever calls them (our code or a library's)."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class OpCalls(TorchDispatchMode):
    """While active, records each call of one of ``ops`` (``torch.ops.aten.*`` overloads)."""

    def __init__(self, ops: frozenset) -> None:
        super().__init__()
        self.ops = ops
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.ops:
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))
