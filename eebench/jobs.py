"""A paper table's missing cells as jobs: a local pool of worker processes, Slurm through submitit
(its local executor runs the same jobs without a cluster), or Ray.

Every job is the same idempotent step, ``eebench finetune RECIPE --if-missing``: it skips a finished
run, resumes an interrupted one, redoes a failed one, and leaves a run another process owns alone
(run folders have one writer; eebench.run.ownership.owned). So two launches of the same table never run a
cell twice and never touch a finished cell, and re-running a launch picks up what is left."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eebench.console import console
from eebench.errors import BUSY_EXIT, UserError
from eebench.paths import DATA_ENV, child_env, data_root, display_recipe

LAUNCHERS = ("local", "slurm", "ray")


class LauncherConfig(BaseModel):
    """The ``[launcher]`` section of a small TOML file (``--launcher-config``); the command line's
    options win over it."""

    model_config = ConfigDict(extra="forbid")
    partition: str | None = None
    gpus: int = Field(1, ge=0)
    cpus: int = Field(8, ge=1)
    """CPUs per GPU (per job when ``gpus`` is 0): a job with N GPUs runs N ranks, each with its loader workers."""
    time_min: int = Field(24 * 60, ge=1)
    mem_gb: int = Field(32, ge=1)
    """Host memory per GPU, GB (per job when ``gpus`` is 0)."""
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    array_parallelism: int = Field(64, ge=1)
    setup: list[str] = Field(default_factory=list)
    """Shell lines run before each job (e.g. ["module load cuda", "source venv/bin/activate"])."""


def job_resources(config: LauncherConfig) -> tuple[int, int]:
    """(CPUs, memory in GB) a job asks for: ``cpus`` and ``mem_gb`` per GPU, times its GPUs (one rank each)."""
    return config.cpus * max(1, config.gpus), config.mem_gb * max(1, config.gpus)


def slurm_parameters(config: LauncherConfig) -> dict:
    """submitit's parameters of one cell's job: one task on one node holding ``gpus`` GPUs (torch's
    distributed launcher starts a rank per GPU inside it), with CPUs and memory for every rank."""
    cpus, mem_gb = job_resources(config)
    extra = {k: v for k, v in (("account", config.account), ("qos", config.qos), ("constraint", config.constraint)) if v}
    return dict(slurm_partition=config.partition, gpus_per_node=config.gpus, cpus_per_task=cpus,
                timeout_min=config.time_min, mem_gb=mem_gb, slurm_array_parallelism=config.array_parallelism,
                slurm_additional_parameters=extra, name="eebench")


def load_launcher_config(path: Path | None, **cli) -> LauncherConfig:
    data: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise UserError(f"--launcher-config {path}: file not found; a TOML file with a [launcher] section")
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8")).get("launcher", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path}: not valid TOML ({err}); fix the syntax at that line") from None
    data.update({k: v for k, v in cli.items() if v is not None})
    try:
        return LauncherConfig.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise UserError(f"{path or 'launcher options'}: launcher.{key}: {first['msg']} "
                        f"(allowed: {', '.join(LauncherConfig.model_fields)})") from None


@dataclass
class Cell:
    recipe: Path
    cells: list[str]
    state: str = "queued"  # queued / running / finished / failed / elsewhere
    log: Path | None = None
    detail: str = ""
    seconds: float = 0.0
    overrides: list[str] = field(default_factory=list)
    """--set lines of this job (a seed of the recipe: train.seed and the run name)."""


@dataclass
class Outcome:
    cells: list[Cell] = field(default_factory=list)

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if c.state == "failed"]


def job_command(recipe: Path, overrides: list[str] = (), processes: int = 1) -> list[str]:
    """The command one cell runs: ``eebench finetune RECIPE --if-missing``; with several processes
    (a job holding N GPUs) the same through torch's distributed launcher, one process per GPU, which
    train the model one process would train (eebench.train.parallel)."""
    finetune = ["-m", "eebench.cli", "finetune", str(recipe), "--if-missing",
                *[x for o in overrides for x in ("--set", o)]]
    if processes <= 1:
        return [sys.executable, *finetune]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}", *finetune]


def visible_devices(env: dict | None = None, count: int | None = None) -> list[str]:
    """The GPUs this process may use, as the ids a child's CUDA_VISIBLE_DEVICES must name: the
    parent's own mask entries (physical ids, GPU-… or MIG-… UUIDs) when it has one, else 0..count-1.
    CUDA reads a mask up to its first invalid entry, so only the first ``count`` entries are visible.
    MIG slices are the exception: one process enumerates only one MIG instance however many the mask
    names, so every MIG entry of the parent's mask counts (each child is pinned to one of them)."""
    import torch

    env = os.environ if env is None else env
    count = torch.cuda.device_count() if count is None else count
    mask = env.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return [str(i) for i in range(count)]
    ids = [x.strip() for x in mask.split(",") if x.strip()]
    if ids and all(x.startswith("MIG-") for x in ids):
        return ids
    return ids[:count]


def worker_masks(workers: int, devices: list[str], per_worker: int = 1, share: bool = False) -> list[str | None]:
    """CUDA_VISIBLE_DEVICES of each local worker slot: ``per_worker`` of the parent's visible devices
    each, disjoint; more workers than that allows is an error unless ``share`` (then slots reuse the
    devices round robin). No GPUs: None for every slot (CPU workers)."""
    if not devices:
        return [None] * workers
    need = workers * per_worker
    if per_worker > len(devices):
        raise UserError(f"--gpus {per_worker}: a job needs {per_worker} GPUs but only {len(devices)} are visible "
                        f"({','.join(devices)})")
    if need > len(devices) and not share:
        raise UserError(f"--jobs {workers} with {per_worker} GPU(s) each needs {need} GPUs; {len(devices)} are "
                        f"visible ({','.join(devices)}): lower --jobs, or pass --share-gpus to put several "
                        f"workers on one GPU")
    groups = len(devices) // per_worker
    return [",".join(devices[(slot % groups) * per_worker:(slot % groups + 1) * per_worker]) for slot in range(workers)]


def _slug(cell: Cell) -> str:
    seed = next((o.split("=", 1)[1] for o in cell.overrides if o.startswith("train.seed=")), None)
    slug = display_recipe(cell.recipe).removeprefix("recipes/").removesuffix(".toml").replace("/", "__")
    return f"{slug}-seed{seed}" if seed is not None else slug


def _finish(cell: Cell, code: int, started: float) -> None:
    cell.seconds = time.perf_counter() - started
    text = cell.log.read_text(errors="replace") if cell.log and cell.log.is_file() else ""
    cell.state = "elsewhere" if code == BUSY_EXIT else "finished" if code == 0 else "failed"
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    cell.detail = errors[-1][:200] if errors else ("" if code == 0 else f"exit code {code}")


# ----------------------------------------------------------------------------------- local
def run_local(cells: list[Cell], jobs: int | None, log_dir: Path, gpus_per_job: int = 1,
              share_gpus: bool = False) -> Outcome:
    """A pool of ``jobs`` worker processes on this machine: by default one per ``gpus_per_job`` of
    the visible GPUs, each pinned to its own with CUDA_VISIBLE_DEVICES (entries of the parent's mask,
    so ``CUDA_VISIBLE_DEVICES=4,5`` gives workers 4 and 5); a worker with several GPUs trains on all
    of them through the distributed launcher. On CPU the cores are divided among the workers."""
    devices = visible_devices()
    per = max(1, gpus_per_job)
    jobs = jobs or max(1, len(devices) // per)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: must be at least 1")
    masks = worker_masks(jobs, devices, per, share_gpus)
    threads = max(1, (os.cpu_count() or 1) // (jobs * (per if devices else 1)))
    free = list(range(jobs))
    base_env = child_env()  # the data root this command uses goes to every cell's process
    log_dir.mkdir(parents=True, exist_ok=True)
    console.print(f"running {len(cells)} cell(s) on {jobs} local worker(s)"
                  + (f", GPU(s) {' | '.join(dict.fromkeys(masks))} (parent's visible: {','.join(devices)})"
                     if devices else f", {threads} CPU thread(s) each")
                  + f"; logs in {log_dir}")

    def work(cell: Cell) -> None:
        slot = free.pop()
        env = {**base_env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        if masks[slot] is not None:
            env["CUDA_VISIBLE_DEVICES"] = masks[slot]
        processes = per if devices else 1
        cell.log, cell.state, started = log_dir / f"{_slug(cell)}.log", "running", time.perf_counter()
        try:
            with open(cell.log, "w") as log:
                code = subprocess.call(job_command(cell.recipe, cell.overrides, processes), stdout=log,
                                       stderr=subprocess.STDOUT, env=env)
        finally:
            free.append(slot)
        _finish(cell, code, started)

    with _progress(cells) as refresh, ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(work, cell) for cell in cells]
        while not all(f.done() for f in futures):
            refresh()
            time.sleep(0.5)
        for f in futures:
            f.result()
        refresh()
    return Outcome(cells)


# ----------------------------------------------------------------------------------- slurm
class CellJob:
    """What a Slurm job runs: the cell's finetune in its own process(es): with ``processes`` > 1 (a
    job holding that many GPUs) one per GPU through the distributed launcher. Its output is streamed
    into the job's log as it comes, so a killed job's log still shows how far it got. On preemption
    or timeout submitit requeues it, and the requeued job resumes from the run's last checkpoint."""

    def __init__(self, recipe: str, data_root: str | None, setup: list[str] | None = None,
                 overrides: list[str] | None = None, processes: int = 1):
        self.recipe, self.data_root, self.setup = recipe, data_root, setup or []
        self.overrides = overrides or []
        self.processes = processes

    def command(self) -> str:
        """The shell script the job runs (the setup lines, then the finetune, exec'd so that a signal to
        the script's process reaches the trainer itself)."""
        return "\n".join([*self.setup, "exec " + shlex.join(job_command(Path(self.recipe), self.overrides,
                                                                          self.processes))])

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_proc"}  # a running process does not travel

    def __call__(self) -> str:
        env = {**os.environ, **({DATA_ENV: self.data_root} if self.data_root else {})}  # on the job's node
        errors = []
        with subprocess.Popen(["bash", "-c", self.command()], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            self._proc = proc
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                if line.startswith("error:"):
                    errors.append(line.strip())
        if proc.returncode == BUSY_EXIT:
            return "elsewhere"
        if proc.returncode != 0:
            raise RuntimeError(errors[-1] if errors else f"eebench finetune exited with {proc.returncode}")
        return "finished"

    def checkpoint(self, *args, **kwargs):
        """What submitit calls in this process on the preemption or time-limit signal, before it requeues
        the job: the trainer is told (SIGTERM; under torch's launcher it reaches every rank) to checkpoint
        after its step in progress and stop (eebench.train.preemption), and is waited for, so the requeued
        job (``--if-missing``: resume an interrupted run) continues from that step."""
        import submitit

        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                pass  # the last periodic checkpoint is what the requeued job resumes from
        return submitit.helpers.DelayedSubmission(CellJob(self.recipe, self.data_root, self.setup, self.overrides,
                                                          self.processes))


STOP_WAIT_S = 80
"""How long a preempted job waits for its trainer to checkpoint and stop (submitit's signal comes 90 s
before Slurm's kill by default)."""


def run_slurm(cells: list[Cell], config: LauncherConfig, log_dir: Path, executor=None) -> Outcome:
    """One Slurm job per cell (a job array) through submitit; ``executor`` (tests: submitit's
    LocalExecutor) replaces the cluster."""
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install 'eebench[cluster]' (or pip install submitit)") from None
    if executor is None:
        executor = submitit.AutoExecutor(folder=str(log_dir / "%j"))
        if executor.cluster != "slurm":
            raise UserError("--launcher slurm: no Slurm here (sbatch not found); use --launcher local, or run on "
                            "the cluster's login node")
        executor.update_parameters(**slurm_parameters(config))
    root = str(data_root()) if data_root() is not None else None
    jobs_of = {}
    with executor.batch():
        for cell in cells:
            jobs_of[id(cell)] = executor.submit(CellJob(str(Path(cell.recipe).resolve()), root, config.setup,
                                                        cell.overrides, processes=max(1, config.gpus)))
    for cell in cells:
        job = jobs_of[id(cell)]
        cell.log = Path(str(job.paths.stdout))
    console.print(f"submitted {len(cells)} job(s): {', '.join(str(jobs_of[id(c)].job_id) for c in cells[:8])}"
                  f"{' ...' if len(cells) > 8 else ''}; logs in {log_dir}")
    started = time.perf_counter()
    with _progress(cells) as refresh:
        while True:
            for cell in cells:
                job = jobs_of[id(cell)]
                if cell.state in ("finished", "failed", "elsewhere"):
                    continue
                if job.done():
                    try:
                        cell.state = job.result()
                    except Exception as err:  # the job's own error, one line
                        cell.state, cell.detail = "failed", str(err).strip().splitlines()[-1][:200]
                    cell.seconds = time.perf_counter() - started
                else:
                    cell.state = "running" if job.state in ("RUNNING", "COMPLETING") else "queued"
            refresh()
            if all(c.state in ("finished", "failed", "elsewhere") for c in cells):
                break
            time.sleep(1.0)
    return Outcome(cells)


# ----------------------------------------------------------------------------------- ray
def run_ray(cells: list[Cell], config: LauncherConfig, log_dir: Path) -> Outcome:
    """One Ray task per cell on the cluster ``ray.init()`` connects to (RAY_ADDRESS), each asking
    for ``gpus`` GPUs and ``cpus`` CPUs per GPU."""
    try:
        import ray
    except ImportError:
        raise UserError("--launcher ray needs ray: pip install 'ray[default]'") from None
    ray.init(ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_gpus=config.gpus, num_cpus=job_resources(config)[0])(
        lambda recipe, root, setup, overrides: CellJob(recipe, root, setup, overrides, max(1, config.gpus))())
    root = str(data_root()) if data_root() is not None else None
    refs = {id(c): remote.remote(str(Path(c.recipe).resolve()), root, config.setup, c.overrides) for c in cells}
    started = time.perf_counter()
    with _progress(cells) as refresh:
        pending = dict(refs)
        for cell in cells:
            cell.state = "running"
        while pending:
            done, _ = ray.wait(list(pending.values()), timeout=1.0)
            for cell in cells:
                if id(cell) in pending and pending[id(cell)] in done:
                    try:
                        cell.state = ray.get(pending.pop(id(cell)))
                    except Exception as err:
                        cell.state, cell.detail = "failed", str(err).strip().splitlines()[-1][:200]
                    cell.seconds = time.perf_counter() - started
            refresh()
    return Outcome(cells)


# ----------------------------------------------------------------------------------- progress
class _progress:
    """A live table of the cells (state, time, log) while the jobs run; plain lines when the output
    is not a terminal."""

    COLORS = {"queued": "dim", "running": "cyan", "finished": "green", "failed": "red", "elsewhere": "yellow"}

    def __init__(self, cells: list[Cell]):
        self.cells = cells
        self.seen: dict[int, str] = {}

    def _table(self):
        from rich.table import Table

        counts = {s: sum(c.state == s for c in self.cells) for s in self.COLORS}
        table = Table(title=" · ".join(f"{n} {s}" for s, n in counts.items() if n), title_justify="left")
        for name in ("cell", "recipe", "state", "time", "log / error"):
            table.add_column(name)
        for c in self.cells:
            table.add_row(", ".join(c.cells)[:60], display_recipe(c.recipe), f"[{self.COLORS[c.state]}]{c.state}[/]",
                          f"{c.seconds:.0f} s" if c.seconds else "", c.detail or (str(c.log) if c.log else ""))
        return table

    def __enter__(self):
        from rich.live import Live

        self.live = Live(self._table(), console=console, refresh_per_second=2) if console.is_terminal else None
        if self.live:
            self.live.__enter__()
        return self.refresh

    def refresh(self) -> None:
        if self.live:
            self.live.update(self._table())
            return
        for i, c in enumerate(self.cells):
            if self.seen.get(i) != c.state:
                self.seen[i] = c.state
                if c.state != "queued":
                    tail = f" ({c.seconds:.0f} s)" if c.seconds else ""
                    console.print(f"cell {', '.join(c.cells)}: {c.state}{tail}"
                                  + (f" — {c.detail}" if c.detail else "") + (f" — log {c.log}" if c.log else ""),
                                  soft_wrap=True)

    def __exit__(self, *exc):
        if self.live:
            self.live.__exit__(*exc)
