"""The jobs on Dask: Beam's DaskRunner, made fit for them.

    python -m pipelines imagenet --input IN --output OUT -- \\
        --runner=pipelines.common.daskrunner.DaskRunner --dask_client_address=tcp://HOST:8786

Beam 2.77's runner (`apache_beam.runners.dask`) as shipped, and what this one does instead; each has a test in
`tests/test_dask.py` that fails on Beam's runner:

1. Only the branch of the last applied transform ran (a job with train and validation wrote only validation) ->
   every PCollection nothing consumes is computed.
2. Outputs a DoFn emits in `finish_bundle` were dropped (they were read before it ran; `BatchElements` kept 512 of
   1,000 elements) -> a bundle's outputs are taken after `finish_bundle`.
3. Tagged outputs went to every consumer of any output of the DoFn -> each output is its own bag, by tag.
4. Side inputs were recomputed inside every task that read them, and a `CombineGlobally` singleton came back
   inflated -> a side input is computed once, on the cluster, and handed to its consumers as values; a DoFn's
   outputs are persisted on the cluster, so a DoFn with effects (a shard writer) runs once however many
   consumers and compute calls read its outputs.
5. `Impulse` failed at construction -> a one-element bag.
6. `result.metrics()` raised NotImplementedError -> each bundle's counters travel with its outputs and are
   summed (committed: only bundles whose outputs were used count, so a retried task counts once).
7. A lost scheduler surfaced as a long traceback -> one line naming the scheduler's address.

Windowing is the global window only (the batch jobs'); `--watch` (unbounded sources) is refused by the jobs.
A worker lost mid-job is Dask's to handle: its tasks are run again elsewhere (the shard writers are idempotent).
"""

from __future__ import annotations

import dataclasses
import typing as t

import apache_beam as beam
from apache_beam.runners.dask import dask_runner as beam_dask
from apache_beam.runners.dask.overrides import _Create, _Flatten, dask_overrides
from apache_beam.runners.runner import PipelineResult, PipelineState

__all__ = ["DaskRunner", "DaskResult"]

POLL = 1.0  # seconds between looks at the tasks and the scheduler
LOST_AFTER = 20.0  # seconds without the scheduler before the job fails


class _GroupByKey(beam.PTransform):
    """GroupByKey as one primitive (global window): grouped by Dask's shuffle."""

    def expand(self, pcoll):
        return beam.pvalue.PCollection.from_(pcoll)


class _GroupByKeyOverride(beam.pipeline.PTransformOverride):
    def matches(self, applied) -> bool:
        return applied.transform.__class__ == beam.GroupByKey

    def get_replacement_transform_for_applied_ptransform(self, applied):
        return _GroupByKey()


def _run_bundle(items: list, fn: t.Any, label: str, side_inputs: list, args: list, kwargs: dict) -> list:
    """One DoFn over one partition (a bundle): [("out", tag, value) ...] then ("metrics", updates)."""
    from apache_beam.metrics.execution import MetricsContainer
    from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, Receiver, _OutputHandler
    from apache_beam.runners.worker import statesampler
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils import counters
    from apache_beam.utils.windowed_value import WindowedValue

    out: list = []

    class _Tagged(Receiver):
        def __init__(self, tag):
            self.tag = tag

        def receive(self, windowed_value):
            out.append(("out", self.tag, windowed_value.value))

    class _Receivers(dict):
        def __missing__(self, tag):
            self[tag] = _Tagged(tag)
            return self[tag]

    receivers = _Receivers()
    handler = _OutputHandler(
        window_fn=None,
        main_receivers=receivers[None],
        tagged_receivers=receivers,
        per_element_output_counter=None,
        output_batch_converter=None,
        process_yields_batches=False,
        process_batch_yields_elements=False,
    )
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn),
        handler,
        context=DoFnContext(label, state=None),
        side_inputs=side_inputs,
        input_args=args,
        input_kwargs=kwargs,
        user_state_context=None,
        bundle_finalizer_param=beam.DoFn.BundleFinalizerParam(),
    )
    sampler = statesampler.StateSampler(label, counters.CounterFactory())
    statesampler.set_current_tracker(sampler)
    container = MetricsContainer(label)
    try:
        with sampler.scoped_state(label, "process", metrics_container=container):
            invoker.invoke_setup()
            invoker.invoke_start_bundle()
            window = (GlobalWindow(),)
            for item in items:
                invoker.invoke_process(WindowedValue(item, 0, window))
            invoker.invoke_finish_bundle()  # fix 2: what it emits is in `out`, read below
            invoker.invoke_teardown()
    except Exception as e:  # named with its step, as Beam's runners name it
        raise _with_step(e, label) from None
    finally:
        statesampler.set_current_tracker(None)
    return [*out, ("metrics", container.get_cumulative())]


def _with_step(e: Exception, label: str) -> Exception:
    """The error as Beam's runners raise it: the same type, its message followed by the step's name."""
    text = f"{e} [while running '{label}']"
    try:
        return type(e)(text)
    except Exception:  # an exception type whose constructor takes other arguments
        return RuntimeError(f"{type(e).__name__}: {text}")


def _side_input(si: t.Any, values: list) -> t.Any:
    from apache_beam.transforms.sideinputs import SideInputMap
    from apache_beam.transforms.window import GlobalWindow
    from apache_beam.utils.windowed_value import WindowedValue

    return SideInputMap(type(si), si._view_options(), [WindowedValue(v, 0, (GlobalWindow(),)) for v in values])


@dataclasses.dataclass
class _Graph:
    """Beam's PCollections as Dask bags (the visitor's state)."""

    client: t.Any
    bag_kwargs: dict
    consumers: dict  # PCollection -> how many transforms read it (main or side input)
    bags: dict = dataclasses.field(default_factory=dict)  # PCollection -> bag
    metrics: list = dataclasses.field(default_factory=list)  # bags of ("metrics", updates)

    def add(self, node: t.Any) -> None:
        import dask.bag as db
        from apache_beam.runners.dask.transform_evaluator import Create

        transform = node.transform
        inputs = [self.bags[p] for p in node.inputs if p in self.bags]
        if isinstance(transform, beam.Impulse):  # fix 5
            self._set(node, db.from_sequence([b""], npartitions=1))
        elif isinstance(transform, _Create):
            self._set(node, Create(node, bag_kwargs=self.bag_kwargs).apply(None))
        elif isinstance(transform, _Flatten):
            self._set(node, db.concat(inputs) if inputs else db.from_sequence([], npartitions=1))
        elif isinstance(transform, _GroupByKey):
            grouped = inputs[0].groupby(lambda kv: kv[0], shuffle="tasks")
            self._set(node, grouped.map(lambda g: (g[0], [kv[1] for kv in g[1]])))
        elif isinstance(transform, beam.ParDo):
            self._pardo(node, inputs[0])
        elif inputs:  # a transform that only changes types or hints (Reshuffle's override, ...)
            self._set(node, inputs[0])
        else:
            raise NotImplementedError(f"the Dask runner cannot run {node.full_label} ({type(transform).__name__})")

    def _set(self, node: t.Any, bag: t.Any) -> None:
        for pcoll in node.outputs.values():
            self.bags[pcoll] = bag

    def _pardo(self, node: t.Any, bag: t.Any) -> None:
        transform = node.transform
        args, kwargs = transform.raw_side_inputs
        sides = []
        for si in node.side_inputs:  # fix 4: computed once, here, and handed over as values
            values = self.client.compute(self.bags[si.pvalue]).result()
            sides.append(_side_input(si, values))
        raw = bag.map_partitions(_run_bundle, transform.fn, node.full_label, sides, list(args), dict(kwargs))
        raw = self.client.persist(raw)  # fix 4: its effects happen once, however many read its outputs
        for tag, pcoll in node.outputs.items():  # fix 3: each output its own bag (the main one's tag is None)
            self.bags[pcoll] = raw.filter(lambda r, tag=tag: r[0] == "out" and r[1] == tag).map(lambda r: r[2])
        self.metrics.append(raw.filter(lambda r: r[0] == "metrics").map(lambda r: r[1]))

    def leaves(self) -> list:
        """Every bag nothing consumes (fix 1), and the metrics."""
        return [b for p, b in self.bags.items() if not self.consumers.get(p)] + self.metrics


def lost_scheduler(address: str | None) -> RuntimeError:
    """Fix 7: one line naming the scheduler."""
    where = address or "the local Dask cluster"
    return RuntimeError(
        f"lost the Dask scheduler at {where}, so the job's tasks are gone: start it again and re-run the job (the "
        "shards it committed are kept)"
    )


class DaskResult(PipelineResult):
    """The job's futures; `wait_until_finish` raises the first task's error, or names a lost scheduler."""

    def __init__(self, client: t.Any, futures: list, n_metrics: int, address: str | None):
        super().__init__(PipelineState.RUNNING)
        self.client, self.futures, self._n_metrics, self._address = client, futures, n_metrics, address
        self._metrics = None

    def wait_until_finish(self, duration=None):
        """Wait for every task; then the first failed leaf's error in pipeline order (deterministic, as the
        default runner's), or one line naming a scheduler lost for `LOST_AFTER` seconds."""
        import asyncio
        import time

        from apache_beam.runners.direct.direct_metrics import DirectMetrics
        from distributed import wait

        deadline = None if duration is None else time.monotonic() + duration / 1000
        lost = 0.0
        try:
            while True:
                try:
                    wait(self.futures, timeout=POLL)
                    break
                except TimeoutError:
                    lost = lost + POLL if self.client.status != "running" else 0.0
                    if lost >= LOST_AFTER or any(f.status == "cancelled" for f in self.futures):
                        raise self._lost() from None
                    if deadline is not None and time.monotonic() > deadline:
                        return self._state
                except (Exception, asyncio.CancelledError):  # the client cancels every future when it loses it
                    if self.client.status == "running" and not any(f.status == "cancelled" for f in self.futures):
                        raise
                    raise self._lost() from None
            for future in self.futures:
                if future.status == "error":
                    self._state = PipelineState.FAILED
                    raise future.exception()
                if future.status != "finished":
                    raise self._lost()
            results = [future.result() for future in self.futures]
        except BaseException:
            self._state = PipelineState.FAILED
            raise
        finally:
            self.client.close()
        metrics = DirectMetrics()  # fix 6
        for updates_list in results[len(results) - self._n_metrics :]:
            for updates in updates_list:
                metrics.commit_logical(None, updates)
        self._metrics = metrics
        self._state = PipelineState.DONE
        return self._state

    def _lost(self) -> RuntimeError:
        return lost_scheduler(self._address)

    def cancel(self):
        self.client.cancel(self.futures)
        self._state = PipelineState.CANCELLED
        return self._state

    def metrics(self):
        return self._metrics


def _consumers(pipeline: beam.Pipeline) -> dict:
    counts: dict = {}

    class Count(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            for p in list(node.inputs) + [si.pvalue for si in node.side_inputs]:
                counts[p] = counts.get(p, 0) + 1

    pipeline.visit(Count())
    return counts


class DaskRunner(beam_dask.DaskRunner):
    """Runs a batch pipeline on a Dask cluster (`--dask_client_address`; default: a local cluster)."""

    def run_pipeline(self, pipeline, options):
        import asyncio
        import logging

        from distributed import Client

        for name in ("distributed.client", "distributed.comm", "tornado.application"):  # fix 7: not tracebacks
            logging.getLogger(name).setLevel(logging.CRITICAL)
        dask_options = options.view_as(beam_dask.DaskOptions).get_all_options(drop_default=True, current_only=True)
        bag_kwargs = beam_dask.DaskOptions._extract_bag_kwargs(dask_options)
        address = dask_options.get("address")
        try:
            client = Client(**dask_options)
        except (OSError, TimeoutError) as e:
            raise RuntimeError(f"cannot reach the Dask scheduler at {address}: {e}") from None
        pipeline.replace_all([_GroupByKeyOverride(), *dask_overrides()])
        graph = _Graph(client, bag_kwargs, _consumers(pipeline))

        class Build(beam.pipeline.PipelineVisitor):
            def visit_transform(self, node):
                graph.add(node)

        try:
            pipeline.visit(Build())  # side inputs are computed on the cluster meanwhile
        except (Exception, asyncio.CancelledError) as e:
            if client.status == "running" and not isinstance(e, asyncio.CancelledError):
                raise
            client.close()
            raise lost_scheduler(address) from None
        leaves = graph.leaves()
        futures = client.compute(leaves)
        return DaskResult(client, list(futures), len(graph.metrics), address)
