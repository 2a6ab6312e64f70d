"""``distill generate --executor ray``: the engine batches of a generate plan run on a Ray Data
actor pool, one engine per actor (a vLLM engine per GPU or per tensor-parallel group, the hf
backend per CPU), and stream back to the driver, which writes them with the plan's
``Sink``: the same ids, rows, shards, manifest and resume.

Each engine batch is one row of the input dataset, so the batches are exactly the local
path's, and a sampled row does not depend on where it ran. The driver writes each batch as one
shard as it arrives, in order; a crash or a lost worker loses at most the batches in flight,
and a rerun generates only the missing rows.
"""

from __future__ import annotations

import importlib
import inspect
import pickle

import pyarrow as pa

from distill.cluster import ray_data, resources, session
from distill.datagen import turns
from distill.datagen.backends import Backend, Sampling, vllm_available
from distill.datagen.plan import Plan, Sink, make_engine
from distill.datagen.prompts import PromptFile
from distill.errors import DistillError


class EngineWorker:
    """A Ray Data callable class: holds one engine; each call generates one batch of requests."""

    def __init__(self, backend: str, model: str | None, options: dict, sampling: Sampling,
                 pf: PromptFile):
        self.engine = make_engine(backend, model, options)
        self.sampling, self.pf = sampling, pf

    def __call__(self, batch: pa.Table) -> pa.Table:
        blobs = batch.column("requests").to_pylist()
        outputs = []
        for blob in blobs:
            requests, rows = pickle.loads(blob)
            outputs.append(pickle.dumps(turns.generate(self.engine, requests, self.sampling,
                                                       self.pf, rows)))
        return pa.table({"batch": batch.column("batch"), "outputs": pa.array(outputs, pa.binary()),
                         "backend": [self.engine.name] * len(outputs)})

    def __del__(self):
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


def run_on_ray(plan: Plan, sink: Sink, backend: str, model: str | None, options: dict,
               address: str | None, workers: int | None) -> str:
    """Generate ``plan`` on the Ray cluster at ``address`` into ``sink``; the backend's name."""
    with session(address) as ray:
        data = ray_data(ray)
        name = ("vllm" if vllm_available() else "hf") if backend == "auto" else backend
        batches = plan.batches(options.get("batch_size") or _default_batch_size(name))
        cpus, gpus = resources(ray)
        per_worker = {"num_gpus": options.get("tensor_parallel_size", 1)} \
            if gpus and name != "openai" else {"num_cpus": 1}
        if workers is None:
            workers = gpus // per_worker["num_gpus"] if "num_gpus" in per_worker else cpus
        if workers < 1:
            raise DistillError(f"the Ray cluster has no room for a {name} worker "
                               f"({cpus} CPUs, {gpus} GPUs; each worker needs {per_worker})")
        ds = data.from_items([{"batch": i, "requests": pickle.dumps(plan.work(b))}
                              for i, b in enumerate(batches)],
                             override_num_blocks=len(batches))  # results stream back at once
        pool = data.ActorPoolStrategy(size=min(workers, len(batches)))
        engine_args = {"backend": name, "model": model, "options": options,
                       "sampling": plan.sampling, "pf": plan.pf}
        out = ds.map_batches(EngineWorker, batch_size=1, batch_format="pyarrow", compute=pool,
                             fn_constructor_kwargs=engine_args, **per_worker)
        for table in out.iter_batches(batch_size=None, batch_format="pyarrow"):
            for i, blob, engine in zip(*(table.column(c).to_pylist()
                                         for c in ("batch", "outputs", "backend"))):
                sink.write(plan.rows(batches[i], pickle.loads(blob), engine))
    return engine


def _default_batch_size(name: str) -> int:
    """The ``batch_size`` default of the backend class in ``distill.datagen.backends.<name>``."""
    try:
        module = importlib.import_module(f"distill.datagen.backends.{name}")
    except ModuleNotFoundError:
        raise DistillError(f"unknown backend {name!r}; choose auto, vllm, openai or hf") from None
    cls = next(c for c in vars(module).values()
               if isinstance(c, type) and issubclass(c, Backend) and c.name == name)
    return inspect.signature(cls).parameters["batch_size"].default
