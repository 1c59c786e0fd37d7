"""Procedural gsm8k-format word problems for the sentinel model.

Each problem is a short story with two to four integer steps (+, -, *, exact /), written the way
gsm8k writes its answers: one reasoning line per step with a ``<<expr=value>>`` annotation, then
``#### N``. Every problem is a pure function of ``(GENERATOR_VERSION, split, seed, index)``, so a
split is reproducible on any machine; :func:`splits` makes the train split disjoint from the test
split by question text.

Properties (``suites/ab/test_sentinel.py``): every annotation evaluates to the value written after
it, the final answer equals the last step's value, every intermediate is a non-negative integer
below 10000, the same arguments give the same problems, and train and test share no question.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Callable

GENERATOR_VERSION = 1

NAMES = {
    "she": ["Ana", "Beth", "Carla", "Dana", "Emma", "Fiona", "Grace", "Hana", "Iris", "Julia", "Kira", "Lena",
            "Maya", "Nora", "Olivia", "Paula", "Rosa", "Sara", "Tara", "Vera", "Wendy", "Zoe"],
    "he": ["Adam", "Ben", "Carlos", "David", "Eli", "Frank", "George", "Hugo", "Ivan", "Jack", "Kevin", "Leo",
           "Mark", "Noah", "Omar", "Peter", "Raj", "Sam", "Tom", "Victor", "Will", "Yusuf"],
}
ITEMS = ["apples", "pencils", "notebooks", "stickers", "cookies", "marbles", "books", "candles", "cups", "shirts",
         "tickets", "plants", "toys", "boxes of tea", "bags of rice", "cards", "muffins", "bottles of juice",
         "pens", "balloons"]
COLLECT = ["shells", "stamps", "rocks", "coins", "leaves", "buttons", "feathers", "postcards"]
BAKED = ["cookies", "cupcakes", "muffins", "rolls", "brownies", "tarts"]
VEHICLES = ["car", "bus", "train", "truck", "boat", "bike"]
UNITS = ["miles", "kilometers"]
PLACES = ["hall", "classroom", "theater", "church", "library", "gym"]
THINGS = ["bike", "game", "jacket", "lamp", "radio", "watch", "backpack", "camera"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
LIMIT = 10000


@dataclasses.dataclass(frozen=True)
class Problem:
    question: str
    answer: str  # reasoning lines, then "#### N"
    value: int
    template: str

    def row(self) -> dict:
        return {"question": self.question, "answer": self.answer}


class _Steps:
    """Collects reasoning lines and checks every value as it is produced."""

    def __init__(self):
        self.lines: list[str] = []
        self.last: int | None = None

    def op(self, expr: str, value: int, line: str) -> int:
        # eval of a generated arithmetic string of digits and + - * / only, checked against value
        exact = eval(expr, {"__builtins__": {}})  # noqa: S307
        if exact != value or not (0 <= value < LIMIT) or int(value) != value:
            raise _Reject
        self.lines.append(line.format(ann=f"{expr} = <<{expr}={value}>>{value}"))
        self.last = value
        return value

    def answer(self) -> str:
        return "\n".join(self.lines) + f"\n#### {self.last}"


class _Reject(Exception):
    """Drawn numbers broke a constraint (negative, too big, inexact); draw again."""


def _person(r: random.Random):
    pron = r.choice(["she", "he"])
    return r.choice(NAMES[pron]), pron, {"she": "her", "he": "his"}[pron]


def t_shopping(r):
    name, he, his = _person(r)
    i1, i2 = r.sample(ITEMS, 2)
    a, b, p, q = r.randint(2, 12), r.randint(2, 12), r.randint(2, 60), r.randint(2, 60)
    s = _Steps()
    x = s.op(f"{a}*{p}", a * p, f"The {i1} cost {{ann}} dollars.")
    y = s.op(f"{b}*{q}", b * q, f"The {i2} cost {{ann}} dollars.")
    s.op(f"{x}+{y}", x + y, f"{name} spends {{ann}} dollars in total.")
    return (f"{name} buys {a} {i1} for ${p} each and {b} {i2} for ${q} each. "
            f"How many dollars does {he} spend in total?"), s


def t_change(r):
    name, he, his = _person(r)
    item = r.choice(ITEMS)
    a, p = r.randint(2, 12), r.randint(2, 40)
    m = r.randint(a * p + 1, a * p + 500)
    s = _Steps()
    x = s.op(f"{a}*{p}", a * p, f"The {item} cost {{ann}} dollars.")
    s.op(f"{m}-{x}", m - x, f"{name} has {{ann}} dollars left.")
    return (f"{name} has ${m}. {he.capitalize()} buys {a} {item} that cost ${p} each. "
            f"How much money does {he} have left?"), s


def t_collect(r):
    name, he, his = _person(r)
    obj = r.choice(COLLECT)
    d1, d2, d3 = r.sample(DAYS, 3) if r.random() < 0.3 else DAYS[:3]
    a, k = r.randint(3, 90), r.randint(2, 5)
    c = r.randint(1, a * k - 1)
    s = _Steps()
    x = s.op(f"{a}*{k}", a * k, f"On {d2} {name} collects {{ann}} {obj}.")
    y = s.op(f"{x}-{c}", x - c, f"On {d3} {he} collects {{ann}} {obj}.")
    s.op(f"{a}+{x}+{y}", a + x + y, f"Altogether {he} collects {{ann}} {obj}.")
    return (f"{name} collects {a} {obj} on {d1}. On {d2} {he} collects {k} times as many as on {d1}. "
            f"On {d3} {he} collects {c} fewer than on {d2}. How many {obj} does {he} collect over the three days?"), s


def t_boxes(r):
    name, he, his = _person(r)
    obj = r.choice(BAKED)
    d, per = r.randint(3, 12), r.randint(2, 30)
    g = r.randint(1, d - 1)
    t = d * per
    s = _Steps()
    x = s.op(f"{t}/{d}", per, f"Each box holds {{ann}} {obj}.")
    y = s.op(f"{d}-{g}", d - g, f"{name} keeps {{ann}} boxes.")
    s.op(f"{x}*{y}", x * y, f"The boxes {he} keeps hold {{ann}} {obj}.")
    return (f"{name} bakes {t} {obj} and packs them equally into {d} boxes. {he.capitalize()} gives away {g} of "
            f"the boxes. How many {obj} are in the boxes {he} keeps?"), s


def t_travel(r):
    v, u = r.choice(VEHICLES), r.choice(UNITS)
    s1, s2 = r.randint(10, 90), r.randint(10, 90)
    h1, h2 = r.randint(2, 9), r.randint(2, 9)
    s = _Steps()
    x = s.op(f"{s1}*{h1}", s1 * h1, f"First the {v} travels {{ann}} {u}.")
    y = s.op(f"{s2}*{h2}", s2 * h2, f"Then it travels {{ann}} {u}.")
    s.op(f"{x}+{y}", x + y, f"In total it travels {{ann}} {u}.")
    return (f"A {v} travels at {s1} {u} per hour for {h1} hours, then at {s2} {u} per hour for {h2} hours. "
            f"How many {u} does the {v} travel in total?"), s


def t_savings(r):
    name, he, his = _person(r)
    thing = r.choice(THINGS)
    w, n = r.randint(5, 80), r.randint(2, 12)
    x0 = r.randint(1, w * n - 1)
    g = r.randint(5, 99)
    s = _Steps()
    x = s.op(f"{w}*{n}", w * n, f"{name} saves {{ann}} dollars.")
    y = s.op(f"{x}-{x0}", x - x0, f"After buying the {thing} {he} has {{ann}} dollars.")
    s.op(f"{y}+{g}", y + g, f"With the gift {he} has {{ann}} dollars.")
    return (f"{name} saves ${w} every week for {n} weeks. Then {he} spends ${x0} on a {thing}. "
            f"{his.capitalize()} aunt gives {name} ${g}. How many dollars does {name} have now?"), s


def t_chairs(r):
    place = r.choice(PLACES)
    rows, c = r.randint(3, 30), r.randint(4, 25)
    k = r.randint(1, rows * c - 1)
    a = r.randint(2, 60)
    s = _Steps()
    x = s.op(f"{rows}*{c}", rows * c, "There are {ann} chairs at first.")
    y = s.op(f"{x}-{k}", x - k, "Without the broken ones there are {ann} chairs.")
    s.op(f"{y}+{a}", y + a, "With the new chairs there are {ann} working chairs.")
    return (f"A {place} has {rows} rows of chairs with {c} chairs in each row. {k} of the chairs are broken, "
            f"and {a} new chairs are brought in. How many working chairs are in the {place} now?"), s


def t_legs(r):
    a, b = r.randint(2, 300), r.randint(2, 300)
    s = _Steps()
    x = s.op(f"{a}*2", a * 2, "The chickens have {ann} legs.")
    y = s.op(f"{b}*4", b * 4, "The cows have {ann} legs.")
    s.op(f"{x}+{y}", x + y, "The animals have {ann} legs in total.")
    return f"A farm has {a} chickens and {b} cows. How many legs do the animals have in total?", s


TEMPLATES: dict[str, Callable] = {f.__name__[2:]: f for f in (
    t_shopping, t_change, t_collect, t_boxes, t_travel, t_savings, t_chairs, t_legs)}


def make(split: str, seed: int, index: int) -> Problem:
    """Problem ``index`` of ``split`` under ``seed``: the same on every machine and Python version."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    r = random.Random(f"accval-sentinel/{GENERATOR_VERSION}/{split}/{seed}/{index}")
    name = r.choice(sorted(TEMPLATES))
    for _ in range(100):
        try:
            question, steps = TEMPLATES[name](r)
        except _Reject:
            continue
        return Problem(question, steps.answer(), steps.last, name)
    raise RuntimeError(f"template {name} rejected 100 draws")  # a template bug, not bad input


def splits(n_train: int, n_test: int, seed: int = 0) -> tuple[list[Problem], list[Problem]]:
    """``n_test`` test problems, then ``n_train`` train problems whose questions are not in the test split."""
    for n, what in ((n_train, "n_train"), (n_test, "n_test")):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{what}: expected a positive int, got {n!r}")
    test, seen = [], set()
    i = 0
    while len(test) < n_test:
        p = make("test", seed, i)
        i += 1
        if p.question not in seen:
            seen.add(p.question)
            test.append(p)
    train, i = [], 0
    while len(train) < n_train:
        p = make("train", seed, i)
        i += 1
        if p.question not in seen:
            seen.add(p.question)
            train.append(p)
    return train, test
