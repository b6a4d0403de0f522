"""Cutting a network into pipeline stages: where to cut (by name or by cost), and the cut itself (slicing or fx)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.split_module import split_module

from lit_infer.errors import ConfigError
from lit_infer.strategies.split import stage_of

SPLIT_KEY = "trainer.strategy.init_args.split_at"


class _HookKeepingTracer(torch.fx.Tracer):
    """fx's tracer, keeping every module with hooks whole: tracing through it would drop its hooks (a
    FeatureExtractor's capture on ``layer4``, say), since the traced code calls its children instead."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return bool(m._forward_hooks or m._forward_pre_hooks) or super().is_leaf_module(m, module_qualified_name)


def split_stages(net: nn.Module, starts: Sequence[int]) -> list[nn.Module]:
    """Cut ``net`` at its top-level children ``starts`` into modules that, applied in turn, compute ``net(x)``.

    An ``nn.Sequential`` is sliced. Any other network is traced with ``torch.fx`` so that the code between children
    (``flatten``, residual adds) goes with its stage; a cut where more than one tensor crosses is refused.
    """
    children = [name for name, _ in net.named_children()]
    if isinstance(net, nn.Sequential):
        bounds = [*starts, len(children)]
        return [nn.Sequential(*list(net)[a:b]) for a, b in itertools.pairwise(bounds)]
    stage_by_child = dict(zip(children, stage_of(starts, len(children)), strict=True))
    try:
        traced = torch.fx.GraphModule(net, _HookKeepingTracer().trace(net))
    except Exception as exc:  # fx raises many kinds on data-dependent Python control flow
        raise ConfigError(
            "trainer.strategy",
            "pipeline",
            f"cannot trace {type(net).__name__} with torch.fx ({type(exc).__name__}: {exc})",
            "Give the network as an nn.Sequential, or use torch.distributed.pipelining",
        ) from exc
    current = 0

    def partition(node: torch.fx.Node) -> int:
        nonlocal current
        if node.op in ("call_module", "get_attr"):
            stage = stage_by_child.get(str(node.target).split(".")[0], current)
            # A child called again after a later one (weight sharing, loops) cannot live in one stage.
            if stage < current:
                raise ConfigError(SPLIT_KEY, str(node.target), "runs after a later stage", "Choose other split points")
            current = stage
        return current

    split = split_module(traced, net, partition)
    stages = [getattr(split, f"submod_{s}", None) for s in range(len(starts))]
    previous: Any = None
    calls = [n for n in split.graph.nodes if n.op not in ("placeholder", "output")]
    placeholders = [n for n in split.graph.nodes if n.op == "placeholder"]
    chain = len(placeholders) == 1 and len(calls) == len(starts) and all(s is not None for s in stages)
    for i, node in enumerate(calls if chain else []):
        expected = placeholders[0] if i == 0 else previous
        if node.op != "call_module" or node.target != f"submod_{i}" or node.args != (expected,) or node.kwargs:
            chain = False
            break
        previous = node
    if not chain:
        raise ConfigError(
            SPLIT_KEY,
            [children[s] for s in starts[1:]],
            "cuts where more than one value passes between stages (or a stage is empty)",
            "Cut between children that pass a single tensor on, e.g. between residual stages",
        )
    return [s for s in stages if s is not None]


def child_costs(
    net: nn.Module, by: Literal["parameters", "time"], example: torch.Tensor | None = None, repeats: int = 3
) -> list[float]:
    """Cost of each top-level child: its parameter count, or its measured forward time on ``example``."""
    children = list(net.named_children())
    if by == "parameters":
        # +1: a child without parameters (pooling) still costs something, and all-zero costs cannot be balanced.
        return [float(sum(p.numel() for p in m.parameters()) + 1) for _, m in children]
    assert example is not None, "timing needs an example input"
    totals = [0.0] * len(children)
    started: dict[int, float] = {}
    handles = []
    # On a GPU the kernels run after Python returns: wait for them at both ends, or the launch time is measured.
    sync = torch.cuda.synchronize if example.is_cuda else lambda: None

    def start(i: int) -> None:
        sync()
        started[i] = time.perf_counter()

    def stop(i: int) -> None:
        sync()
        totals[i] += time.perf_counter() - started[i]

    for i, (_, module) in enumerate(children):
        handles.append(module.register_forward_pre_hook(lambda *_, i=i: start(i)))
        handles.append(module.register_forward_hook(lambda *_, i=i: stop(i)))
    try:
        with torch.inference_mode():
            for _ in range(repeats + 1):  # the first run warms up and is not counted
                if _ == 1:
                    totals[:] = [0.0] * len(children)
                net(example)
    finally:
        for handle in handles:
            handle.remove()
    return [t + 1e-9 for t in totals]
