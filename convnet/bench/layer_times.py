"""Where a training step goes, layer by layer: every layer's forward and backward time,
measured inside real training steps, in convnet and in PyTorch.

convnet's layer objects are timed by wrapping their ``forward`` and ``backward`` methods
(instance attributes that shadow the class's), PyTorch's modules by forward pre/post hooks
and full backward pre/post hooks (plus a hook on each parameter's gradient accumulation:
a module whose inputs need no gradient, the first convolution, reports its backward done
before it computes its weight gradient). Everything is removed when the measurement ends,
also when a step raises.

A layer's time is what its own methods took, whatever they do: should convnet run a batch
norm and the following ReLU as one pass inside the batch norm's method, the batch norm's
time includes the ReLU's and the ReLU's is ~0 (or ``None`` when its methods are not called
at all). The sum of the layers counts every moment inside any layer once (a layer's method
called from another's is not counted twice), so the step's total minus that sum is the time
between the layers: residual additions, the loss, the update, Python.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np

from convnet.nn import Layer, Module

PHASES = ("forward", "backward")
SUM_ROW = "sum of the layers"
STEP_ROW = "the whole step"
NamedLayers = list[tuple[str, Layer]]
# (layer name or SUM_ROW or STEP_ROW, phase) -> ms, None for a layer never called
Profile = dict[tuple[str, str], float | None]

_ABSENT = object()


def named_layers(module: Module, prefix: str = "") -> NamedLayers:
    """Every layer of ``module``'s subtree in forward order, with its dotted name (its
    parameters' names in ``module.params`` are ``name.w``, ...; ``""`` for a lone layer)."""
    if isinstance(module, Layer):
        return [(prefix, module)]
    return [
        entry
        for name, child in module.children()
        for entry in named_layers(child, f"{prefix}.{name}" if prefix else name)
    ]


class LayerClock:
    """The time intervals each layer spent in each phase during one step.

    Parameters
    ----------
    timer : callable, default time.perf_counter
        Seconds, monotonic.
    """

    def __init__(self, timer: Callable[[], float] = time.perf_counter) -> None:
        self.now = timer
        self.intervals: dict[tuple[str, str], list[list[float]]] = {}
        self.forward_end: float | None = None

    def reset(self) -> None:
        """Forget the last step."""
        self.intervals = {}
        self.forward_end = None

    def begin(self, layer: str, phase: str) -> None:
        """Open an interval of ``layer``'s ``phase`` now."""
        now = self.now()
        self.intervals.setdefault((layer, phase), []).append([now, now])

    def end(self, layer: str, phase: str) -> None:
        """Extend the latest interval of ``layer``'s ``phase`` to now (it ends at the
        latest of its ends); nothing if none was opened."""
        spans = self.intervals.get((layer, phase))
        if spans:
            spans[-1][1] = max(spans[-1][1], self.now())

    def mark_forward_end(self) -> None:
        """The network's forward pass returned now."""
        self.forward_end = self.now()

    def seconds(self, layer: str, phase: str) -> float | None:
        """Seconds of ``layer``'s ``phase`` this step, None if it never began."""
        spans = self.intervals.get((layer, phase))
        return None if spans is None else sum(end - start for start, end in spans)

    def covered_seconds(self, phase: str) -> float:
        """Seconds inside any layer's ``phase``; overlapping intervals count once."""
        spans = sorted(
            span for key, spans in self.intervals.items() if key[1] == phase for span in spans
        )
        total = 0.0
        reach = -np.inf
        for start, end in spans:
            start = max(start, reach)
            if end > start:
                total += end - start
                reach = end
        return total


def _timed(method: Callable, clock: LayerClock, name: str, phase: str) -> Callable:
    @functools.wraps(method)
    def timed(*args: Any, **kwargs: Any) -> Any:
        clock.begin(name, phase)
        try:
            return method(*args, **kwargs)
        finally:
            clock.end(name, phase)

    return timed


def _marking_forward_end(method: Callable, clock: LayerClock) -> Callable:
    @functools.wraps(method)
    def marked(*args: Any, **kwargs: Any) -> Any:
        out = method(*args, **kwargs)
        clock.mark_forward_end()
        return out

    return marked


@contextmanager
def convnet_timers(net: Module, layers: NamedLayers, clock: LayerClock) -> Iterator[None]:
    """Inside the block, every layer's ``forward`` and ``backward`` report to ``clock``
    and ``net.forward`` marks the forward pass's end; on exit (also by an exception) every
    object gets back exactly the attributes it had."""
    replaced: list[tuple[Module, str, Any]] = []

    def replace(owner: Module, attribute: str, wrapper: Callable) -> None:
        replaced.append((owner, attribute, owner.__dict__.get(attribute, _ABSENT)))
        setattr(owner, attribute, wrapper)

    try:
        for name, layer in layers:
            for phase in PHASES:
                replace(layer, phase, _timed(getattr(layer, phase), clock, name, phase))
        replace(net, "forward", _marking_forward_end(net.forward, clock))
        yield
    finally:
        for owner, attribute, previous in reversed(replaced):
            if previous is _ABSENT:
                delattr(owner, attribute)
            else:
                setattr(owner, attribute, previous)


def _hook(action: Callable[[str, str], None], name: str, phase: str) -> Callable[..., None]:
    def hook(*_: Any) -> None:  # returns None: the module's inputs and outputs stay
        action(name, phase)

    return hook


@contextmanager
def torch_timers(
    network: Any, counterparts: dict[Module, Any], layers: NamedLayers, clock: LayerClock
) -> Iterator[None]:
    """Inside the block, the PyTorch counterparts of ``layers`` (``counterparts`` maps a
    convnet module to its own, see :func:`convnet.bench.torch_reference.torch_network`)
    report their forward and backward passes to ``clock``, and ``network`` marks the
    forward pass's end; on exit (also by an exception) every hook is removed."""
    handles: list[Any] = []

    def remove_hooks() -> None:
        for handle in handles:
            handle.remove()

    with ExitStack() as restore:
        restore.callback(remove_hooks)
        restore.enter_context(warnings.catch_warnings())
        warnings.filterwarnings(  # the first layer's early hook: its parameters' hooks end it
            "ignore", message="Full backward hook is firing when gradients are computed"
        )
        for name, layer in layers:
            module = counterparts[layer]
            handles += [
                module.register_forward_pre_hook(_hook(clock.begin, name, "forward")),
                module.register_forward_hook(_hook(clock.end, name, "forward")),
                module.register_full_backward_pre_hook(_hook(clock.begin, name, "backward")),
                module.register_full_backward_hook(_hook(clock.end, name, "backward")),
            ]
            handles += [
                parameter.register_post_accumulate_grad_hook(_hook(clock.end, name, "backward"))
                for parameter in module.parameters()
            ]
        handles.append(network.register_forward_hook(lambda *_: clock.mark_forward_end()))
        yield


def _step_sample(step: Callable[[], object], clock: LayerClock, layers: NamedLayers) -> Profile:
    """One timed step: every layer's ms per phase, their sum, and the step's two parts."""
    clock.reset()
    start = clock.now()
    step()
    stop = clock.now()
    forward_end = stop if clock.forward_end is None else clock.forward_end
    sample: Profile = {}
    for name, _ in layers:
        for phase in PHASES:
            seconds = clock.seconds(name, phase)
            sample[(name, phase)] = None if seconds is None else 1e3 * seconds
    for phase in PHASES:
        sample[(SUM_ROW, phase)] = 1e3 * clock.covered_seconds(phase)
    sample[(STEP_ROW, "forward")] = 1e3 * (forward_end - start)
    sample[(STEP_ROW, "backward")] = 1e3 * (stop - forward_end)
    return sample


def _combine(samples: list[Profile], reduce: Callable[[list[float]], float]) -> Profile:
    """``reduce`` of every entry over the samples; None where any sample has None."""
    combined: Profile = {}
    for key in samples[0]:
        values = [sample[key] for sample in samples]
        combined[key] = None if None in values else float(reduce(values))
    return combined


def layer_profiles(
    steps: dict[str, Any], layers: NamedLayers, repeats: int, pause: float, calls: int
) -> dict[str, Profile]:
    """Median ms of every layer's forward and backward inside each training step.

    Parameters
    ----------
    steps : dict
        Name -> a training step: a callable with ``instrument(layers, clock)``, a context
        manager inside which its layers report to a :class:`LayerClock`
        (:class:`convnet.bench.train_step.ConvnetStep`, ``TorchStep``).
    layers : list of (name, Layer)
        The convnet network's :func:`named_layers`.
    repeats, pause, calls : int, float, int
        Interleaved rounds: per round and step, a pause, an untimed step, then ``calls``
        timed steps whose mean is one sample.

    Returns
    -------
    dict
        Step name -> {(row, phase): median ms}: a row per layer (None if its methods were
        never called), ``SUM_ROW`` (time inside any layer) and ``STEP_ROW`` (``forward``:
        until the network's forward pass returned; ``backward``: the rest of the step,
        loss, backward pass and update).
    """
    clocks = {name: LayerClock() for name in steps}
    samples: dict[str, list[Profile]] = {name: [] for name in steps}
    with ExitStack() as instrumented:
        for name, step in steps.items():
            instrumented.enter_context(step.instrument(layers, clocks[name]))
        for _ in range(repeats):
            for name, step in steps.items():
                time.sleep(pause)
                step()
                timed = [_step_sample(step, clocks[name], layers) for _ in range(calls)]
                samples[name].append(_combine(timed, np.mean))
    return {name: _combine(values, np.median) for name, values in samples.items()}
