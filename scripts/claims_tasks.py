"""The claims of results/tasks/README.md: `ropebench sweep tasks` at three seeds (runs/data.task=T,positions=P,seed=S),
exact match read from each run's eval_task.csv through ``ropebench.report.tasks`` (the reader, summaries and
ranking of ``ropebench table --task``) and counted per seed.

A run's *inside* score is its mean exact match over the lengths 1 .. L, its *beyond* score the mean over L+1 .. 4L,
a length the encoding cannot represent counting 0 (learned positions past their table), a length without test
instances left out -- the summaries of ``ropebench table --task``. A task is *learned* by a label when its inside
score is at least 0.95 (the bar the task sweep's budget is chosen to meet). Kazemnejad et al.'s ranking is of the
six core encodings, over the tasks all six learn in every seed: a task that is not learned inside its range says
nothing about length generalization. Randomized positions (Ruoss et al.) are compared with their plain encoding,
task by task."""

from __future__ import annotations

import functools
import itertools
import json
import math
import random
import statistics

from claims_common import RESULTS, claim, runs, seed_list

from ropebench.report.tasks import LEARNED, TaskSeries, load_task_rows, mean_ranks, task_series

FOLDER = "tasks"
SEEDS = (0, 1, 2)
TASKS = ("copy", "reverse", "sort", "addition", "parity", "mqar")
CORE = ("rope", "sinusoidal", "learned", "t5", "alibi", "nope")
LABELS = (*CORE, "random_rope", "random_learned")
# Kazemnejad et al. 2023's ordering by mean rank (their Figure 3): NoPE >= T5 > ALiBi > RoPE ~ sinusoidal.
KAZEMNEJAD = ("nope", "t5", "alibi", "rope")
# Ruoss et al. 2023: randomized positions against the plain ones, on reverse and copy.
RUOSS_TASKS = ("reverse", "copy")
RUOSS_PAIRS = (("random_rope", "rope"), ("random_learned", "learned"))


@functools.cache
def _series(task: str, label: str, seed: int) -> TaskSeries:
    """One run read through ``ropebench table --task``'s own reader: a point per length (no bins), so that its
    summaries are the table's inside / beyond means and a single length can be read off it."""
    (run,) = runs(FOLDER, f"data.task={task},positions={label},seed={seed}")
    (series,) = task_series(load_task_rows([run]))[task]
    return series


def _at(task: str, label: str, seed: int, length: int) -> float:
    """Exact match at one length; 0 where the encoding cannot represent it."""
    point = _series(task, label, seed).points[(length, length)]
    return point.mean if point.status == "ok" else 0.0


def _inside(task: str, label: str, seed: int) -> float:
    return _series(task, label, seed).summary(inside=True)


def _beyond(task: str, label: str, seed: int) -> float:
    return _series(task, label, seed).summary(inside=False)


def _fmt(x: float) -> str:
    return f"{x:.2f}"


def _seeds() -> str:
    return ", ".join(map(str, SEEDS))


def _count(k: int, n: int = len(SEEDS)) -> str:
    return "in every seed" if k == n else f"in {k} of {n} seeds"


def _learners(task: str) -> list[str]:
    """The labels whose inside score reaches the bar in every seed."""
    return [lab for lab in LABELS if all(_inside(task, lab, s) >= LEARNED for s in SEEDS)]


def learned_tasks() -> list[str]:
    """The tasks every core encoding learns inside the training range in every seed."""
    return [t for t in TASKS if set(CORE) <= set(_learners(t))]


@claim(FOLDER, measurement=True)
def tasks_sweep_time():
    times = json.loads((RESULTS / FOLDER / "sweep_time.json").read_text())["seconds_by_seed"]
    walls = [times[str(s)] for s in SEEDS]
    text = (f"One seed of `ropebench sweep tasks` (48 runs, trained and evaluated) took "
            f"{', '.join(f'{w // 60:.0f} min {w % 60:.0f} s' for w in walls)} of wall time (seeds {_seeds()}) on the "
            f"2 CPU cores.")
    return text, max(walls) <= 30 * 60


@claim(FOLDER)
def tasks_learned_inside():
    parts = []
    for task in TASKS:
        who = _learners(task)
        named = "every label" if len(who) == len(LABELS) else (", ".join(who) if who else "no label")
        parts.append(f"{task}: {named}")
    text = (f"Learned inside the training range (mean exact match over lengths 1 .. L at least {LEARNED}) in every "
            f"seed -- " + "; ".join(parts) + ".")
    return text, True


@claim(FOLDER)
def tasks_inside_scores():
    parts = [f"{task} " + " / ".join(f"{lab} {_fmt(statistics.fmean(_inside(task, lab, s) for s in SEEDS))}"
                                     for lab in LABELS) for task in TASKS]
    return f"Mean exact match inside the training range, mean of {len(SEEDS)} seeds: " + "; ".join(parts) + ".", True


def _ranks(seed: int, tasks: list[str]) -> dict[str, float]:
    """Mean rank of each core encoding by its beyond score over ``tasks`` in one seed (``table --task``'s ranking:
    ties share the mean rank; 1 is best)."""
    by_task = {task: [_series(task, lab, seed) for lab in CORE] for task in tasks}
    return {label: rank for label, rank, _ in mean_ranks(by_task)}


@claim(FOLDER)
def tasks_mean_rank():
    tasks = learned_tasks()
    per_seed = [_ranks(s, tasks) for s in SEEDS]
    parts = [f"{lab} {seed_list([_fmt(r[lab]) for r in per_seed])}" for lab in CORE]
    text = (f"Mean place of the six core encodings (1: the most exact match beyond the training range; a tie shares "
            f"its places), over the tasks all six learn in every seed "
            f"({', '.join(tasks)}), seeds {_seeds()}: " + "; ".join(parts) + ".")
    return text, bool(tasks)


@claim(FOLDER)
def tasks_kazemnejad_order():
    tasks = learned_tasks()

    def holds(r: dict[str, float]) -> bool:  # NoPE at or ahead of T5, then strictly ahead (a lower mean rank)
        nope, t5, alibi, rope = (r[lab] for lab in KAZEMNEJAD)
        return nope <= t5 < alibi < rope

    held = sum(holds(_ranks(s, tasks)) for s in SEEDS)
    text = (f"Kazemnejad et al.'s order by mean rank, NoPE at or ahead of T5, T5 ahead of ALiBi, ALiBi ahead of "
            f"RoPE, holds {_count(held)}.")
    return text, bool(tasks), (held, len(SEEDS))


@claim(FOLDER)
def tasks_nope_vs_rope():
    tasks = learned_tasks()
    held = sum(_ranks(s, tasks)["nope"] < _ranks(s, tasks)["rope"] for s in SEEDS)
    return f"NoPE ranks ahead of RoPE {_count(held)}.", bool(tasks), (held, len(SEEDS))


def _ruoss(task: str, random_label: str, plain: str):
    beyond = [(_beyond(task, random_label, s), _beyond(task, plain, s)) for s in SEEDS]
    past = _series(task, plain, SEEDS[0]).train_len + 1
    first = [(_at(task, random_label, s, past), _at(task, plain, s, past)) for s in SEEDS]
    held = sum(r > p for r, p in beyond)
    text = (f"On {task}, {random_label} beats {plain} beyond the training range {_count(held)} (mean exact match "
            f"over L+1 .. 4L per seed: {seed_list([_fmt(r) for r, _ in beyond])} against "
            f"{seed_list([_fmt(p) for _, p in beyond])}; at L+1: {seed_list([_fmt(r) for r, _ in first])} against "
            f"{seed_list([_fmt(p) for _, p in first])}).")
    return text, True, (held, len(SEEDS))


for _task in RUOSS_TASKS:
    for _random, _plain in RUOSS_PAIRS:
        claim(FOLDER, name=f"tasks_ruoss_{_task}_{_plain}")(functools.partial(_ruoss, _task, _random, _plain))


def _table_is_current(name: str, labels: tuple[str, ...]) -> bool:
    from ropebench.report.tasks import task_table

    paths = [run for run in runs(FOLDER) if run.name.split("positions=")[1].split(",")[0] in labels]
    committed = (RESULTS / FOLDER / name).read_text().strip()
    return committed == task_table(paths).strip() and committed in (RESULTS / FOLDER / "README.md").read_text()


@claim(FOLDER, measurement=True)
def tasks_tables():
    text = ("`tasks.md` and `core.md` are exactly what `ropebench table --task` prints for the committed runs (all "
            "of them, and the six core encodings' runs).")
    return text, _table_is_current("tasks.md", LABELS) and _table_is_current("core.md", CORE)


@claim(FOLDER, measurement=True)
def tasks_test_side_sizes():
    """How many distinct test instances the shortest lengths hold: a property of the split, read off the code."""
    from ropebench.data import tasks as task_data

    def test_count(task: str, n: int) -> tuple[int, int]:
        # Every instance of a space this small turns up in 4,000 draws (as tasks._side_is_empty relies on).
        rng = random.Random(f"{task}:{n}")
        found = {task_data.TASKS[task].make(n, rng).tokens for _ in range(4000)}
        return sum(task_data.is_test(task, t) for t in found), len(found)

    parts = [f"{task} of length {n}: {k} of {total}" for task, n in (("copy", 1), ("reverse", 1), ("sort", 1),
                                                                     ("parity", 3), ("parity", 4))
             for k, total in [test_count(task, n)]]
    text = ("Test instances among all instances at the shortest lengths (the split is by a hash of the tokens, so "
            "a length with few instances holds few test instances, and its bucket's 100 trials repeat them): "
            + "; ".join(parts) + ".")
    return text, True


def _random_order_exact(n: int) -> float:
    total = 0.0
    for values in itertools.product(range(10), repeat=n):
        total += math.prod(math.factorial(values.count(v)) for v in set(values)) / math.factorial(n)
    return total / 10**n


@claim(FOLDER)
def tasks_mqar_is_guessing():
    """MQAR unlearned: a model that answers the n queries with the context's n values in a random order (each value
    once) is right when the order matches -- probability prod(m!) / n! for values repeated m times -- averaged over
    the values (digits drawn uniformly); the runs' exact match sits there."""
    pairs, trials = (2, 3, 4), 100  # eval-task's default trials per length
    guess = {n: _random_order_exact(n) for n in pairs}
    ceiling = {n: g + 3 * math.sqrt(g * (1 - g) / trials) for n, g in guess.items()}  # 3 binomial SEs above
    held = sum(all(_at("mqar", lab, s, n) <= ceiling[n] for lab in CORE for n in pairs) for s in SEEDS)
    mean = {n: statistics.fmean(_at("mqar", lab, s, n) for lab in CORE for s in SEEDS) for n in pairs}
    text = (f"MQAR, the six core encodings: exact match at 2, 3 and 4 pairs {' / '.join(_fmt(mean[n]) for n in pairs)} "
            f"(mean of the runs), where answering the queries with the context's values in a random order scores "
            f"{' / '.join(_fmt(guess[n]) for n in pairs)}; no run is more than 3 binomial standard errors "
            f"({trials} trials) above that score, {_count(held)}.")
    return text, True, (held, len(SEEDS))


@claim(FOLDER)
def tasks_random_inside_cost():
    """Randomized positions against the plain ones inside the training range, on the tasks Ruoss et al. name."""
    held = sum(all(_inside(t, r, s) < _inside(t, p, s) for t in RUOSS_TASKS for r, p in RUOSS_PAIRS)
               for s in SEEDS)
    text = (f"Inside the training range, randomized RoPE scores below RoPE and randomized learned positions below "
            f"learned ones on both reverse and copy {_count(held)}.")
    return text, True, (held, len(SEEDS))
