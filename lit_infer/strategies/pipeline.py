"""Pipeline model-parallel inference in one process: the network cut into stages on several devices.

Each batch is cut into micro-batches; stage ``k`` has its own worker thread (and CUDA stream), so stage ``k`` works
on micro-batch ``i`` while stage ``k + 1`` works on ``i - 1``. For networks too big for one device; on devices that
each hold the whole network, ``dp`` or ``ddp`` are faster.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal

import lightning as L
import torch
import torch.fx
import torch.nn as nn
from torch.fx.passes.split_module import split_module
from typing_extensions import override

from lit_infer.errors import ConfigError
from lit_infer.strategies.devices import DeviceListStrategy
from lit_infer.strategies.planning import balance, micro_batch_sizes, stage_of, starts_from_names
from lit_infer.strategies.tensors import cat_outputs, move, record_stream

_KEY = "trainer.strategy.init_args.split_at"


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
                raise ConfigError(_KEY, str(node.target), "runs after a later stage", "Choose other split points")
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
            _KEY,
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


class PipelinedNet(nn.Module):
    """Stages on devices, run as a wavefront over micro-batches; outputs come back on the input's device."""

    def __init__(
        self,
        stages: Sequence[nn.Module],
        devices: Sequence[torch.device],
        micro_batches: int,
        context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.devices = list(devices)
        self.micro_batches = micro_batches
        self.context = context
        self.streams = [torch.cuda.Stream(d) if d.type == "cuda" else None for d in self.devices]
        # One thread per stage: FIFO per stage keeps the micro-batches in order at every stage.
        self.workers = [ThreadPoolExecutor(1, thread_name_prefix=f"lit_infer_stage{k}") for k in range(len(stages))]
        for stage, device in zip(self.stages, self.devices, strict=True):
            stage.to(device)

    def forward(self, x: torch.Tensor) -> Any:
        sizes = micro_batch_sizes(x.shape[0], self.micro_batches)
        ready = None
        if x.is_cuda:  # the input was made on this thread's stream; the first stage waits for it
            ready = torch.cuda.Event()
            ready.record(torch.cuda.current_stream(x.device))
        futures: list[Future] = []
        for chunk in x.split(sizes):
            future: Future | None = None
            for k in range(len(self.stages)):
                source = (chunk, ready) if future is None else future
                future = self.workers[k].submit(self._run_stage, k, source)
            assert future is not None
            futures.append(future)
        outputs = []
        for future in futures:
            out, event = future.result()
            if event is not None:
                event.synchronize()
            out = move(out, x.device)
            if x.is_cuda:  # made on the last stage's stream, read on this thread's
                record_stream(out, torch.cuda.current_stream(x.device))
            outputs.append(out)
        return cat_outputs(outputs)

    def _run_stage(self, k: int, source: tuple[Any, Any] | Future) -> tuple[Any, torch.cuda.Event | None]:
        x, event = source.result() if isinstance(source, Future) else source
        stream, device = self.streams[k], self.devices[k]
        # Grad mode, inference mode and autocast are per thread: enter them again in this stage's thread.
        with torch.inference_mode(), self.context(), _on_stream(stream):
            if stream is not None and event is not None:
                stream.wait_event(event)
            elif event is not None:
                event.synchronize()
            # Non-blocking only towards a GPU: a non-blocking copy to the CPU may be read before it lands.
            x = move(x, device, non_blocking=device.type == "cuda")
            if stream is not None:
                record_stream(x, stream)  # made on the previous stage's stream, read on this one
            out = self.stages[k](x)
            done = None
            if stream is not None:
                done = torch.cuda.Event()
                done.record(stream)
        return out, done

    def close(self) -> None:
        for worker in self.workers:
            worker.shutdown(wait=True)


@contextlib.contextmanager
def _on_stream(stream: torch.cuda.Stream | None) -> Iterator[None]:
    if stream is None:
        yield
    else:
        with torch.cuda.device(stream.device), torch.cuda.stream(stream):
            yield


class PipelineStrategy(DeviceListStrategy):
    """One process, the network cut into stages over ``devices``, batches cut into micro-batches.

    Preprocessing and postprocessing run on the first device; the module's ``net`` is swapped for the pipelined
    stages during prediction and put back afterwards.

    Example::

        trainer = Trainer(strategy=PipelineStrategy(devices=["cuda:0", "cuda:1"], split_at=["layer3"]))

    Args:
        devices: One device per stage, e.g. ``[cuda:0, cuda:1]`` (the same device may repeat; ``cpu`` works).
            ``None``: the Trainer's ``accelerator`` and ``devices``.
        split_at: Names of the top-level children of the network where stages 2, 3, ... begin. ``None``: balanced
            automatically over the children.
        balance_by: ``parameters`` (memory) or ``time`` (measured forward time on the first device).
        micro_batches: Micro-batches per batch; more keeps the stages busier, fewer gives larger kernels.
    """

    strategy_name = "pipeline"

    def __init__(
        self,
        devices: list[str] | None = None,
        split_at: list[str] | None = None,
        balance_by: Literal["parameters", "time"] = "parameters",
        micro_batches: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(devices, **kwargs)
        if micro_batches < 1:
            raise ConfigError(
                "trainer.strategy.init_args.micro_batches", micro_batches, "must be at least 1", "Use 1 or more"
            )
        if balance_by not in ("parameters", "time"):
            raise ConfigError(
                "trainer.strategy.init_args.balance_by", balance_by, "unknown", "Use 'parameters' or 'time'"
            )
        self.split_at = list(split_at) if split_at else None
        self.balance_by = balance_by
        self.micro_batches = micro_batches
        self._original_net: nn.Module | None = None
        self.plan: list[tuple[str, list[str]]] = []
        """(device, top-level children) per stage, once set up."""

    @override
    def setup(self, trainer: L.Trainer) -> None:
        super().setup(trainer)
        module = self.lightning_module
        assert module is not None
        net = getattr(module, "net", None)
        if not isinstance(net, nn.Module):
            raise ConfigError(
                "trainer.strategy", "pipeline", "needs a module with a `net` attribute", "Use lit_infer's modules"
            )
        devices = self.device_list
        children = [name for name, _ in net.named_children()]
        if self.split_at is not None:
            starts = starts_from_names(children, self.split_at)
            if len(starts) != len(devices):
                raise ConfigError(
                    _KEY,
                    self.split_at,
                    f"makes {len(starts)} stages for {len(devices)} devices",
                    "Name one split point fewer than there are devices",
                )
        else:
            if len(children) < len(devices):
                raise ConfigError(
                    "trainer.strategy.init_args.devices",
                    [str(d) for d in devices],
                    f"has more devices than the network has top-level children ({len(children)})",
                    "Use fewer devices, or give split_at",
                )
            starts = balance(child_costs(net, self.balance_by, self._example(module)), len(devices))
        stages = split_stages(net, starts)
        self.plan = [
            (str(d), children[a:b]) for d, a, b in zip(devices, starts, [*starts[1:], len(children)], strict=True)
        ]
        self._original_net = net
        module.net = PipelinedNet(stages, devices, self.micro_batches, self.thread_context)

    def _example(self, module: nn.Module) -> torch.Tensor | None:
        if self.balance_by != "time":
            return None
        size = getattr(getattr(module, "preprocessing", None), "crop_size", 224)
        dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
        return torch.rand(self.micro_batches, 3, size, size, device=self.root_device).to(dtype)

    @override
    def teardown(self) -> None:
        module = self.lightning_module
        if module is not None and self._original_net is not None:
            pipelined = module.net
            if isinstance(pipelined, PipelinedNet):
                pipelined.close()
            # The stages share the original modules' parameters: the user's network is back, on the first device.
            module.net = self._original_net.to(self.root_device)
            self._original_net = None
        super().teardown()
