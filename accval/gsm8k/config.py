"""The gsm8k A/B's settings (:class:`Settings`), their validation (:func:`validate`), before a run directory
is made or a model loads, and the two arms they make (:func:`arms_for`). Settings that name endpoint servers
ask them which model they serve (:func:`served_model`)."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import torch

from accval.model import builtin
from accval.site import MATMUL, MODES, Arm, sharding
from accval.site.arms import UnknownBackend
from accval.site.sharding import PREFILL_TOKENS

from . import ranks as ranks_mod
from . import task as task_mod

CLI_MODES = ("dep8", "tep8")
SENTINEL = "sentinel"


@dataclasses.dataclass(frozen=True)
class Settings:
    mode: str = "dep8"
    model: str = builtin.BUILTIN
    data_dir: str | None = None
    limit: int | None = None
    num_fewshot: int = 5
    batch_size: int = 32  # questions generated together
    max_gen_toks: int = 256
    device: str = "auto"
    seed: int = 0
    backend: str = "auto"
    inject: str | None = None
    producer: str | None = None  # arm B's producer / consumer: registered names or module:attr (None: the backend's)
    consumer: str | None = None
    endpoint_a: str | None = None  # OpenAI-compatible completions servers as the arms
    endpoint_b: str | None = None
    ranks: int | str | None = None  # real processes hosting the 8 DEP/TEP ranks (None: emulated in one process;
    # "auto": :func:`auto_ranks`)
    matmul: str = "auto"  # accval.site.MATMUL; auto: fp32 on a CPU, the model's own on a GPU
    prefill_tokens: int | None = None  # most prompt tokens a rank prefills in one forward (None: PREFILL_TOKENS)

    def resolved(self) -> "Settings":
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        backend = self.backend
        if backend == "auto":
            backend = "triton" if device.startswith("cuda") else "torch"
        matmul = self.matmul
        if matmul == "auto":
            matmul = "model" if device.startswith("cuda") else "fp32"
        prefill = PREFILL_TOKENS if self.prefill_tokens is None else self.prefill_tokens
        return dataclasses.replace(self, device=device, backend=backend, matmul=matmul, prefill_tokens=prefill)


def auto_ranks(mode: str, device: str) -> int | None:
    """``--ranks auto``: on a CPU under DEP, one process per core (the largest divisor of 8 not above
    the cores this process may use), else None (one process). DEP ranks exchange nothing while they
    generate, so their processes share the cores; on the 2-core EPYC 64 sentinel questions took 92 s
    in 2 processes against 129 s in one. TEP ranks exchange partial sums in every layer: 83 s in 2
    processes against 73 s in one (32 questions). On a GPU more processes would share one card."""
    if device.startswith("cuda") or MODES[mode][0] != "dep" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None  # under torchrun the group torchrun made decides
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    n = max(d for d in (1, 2, 4, 8) if d <= cores)
    return n if n > 1 else None


DEVICE_RE = re.compile(r"auto|cpu|cuda(:\d+)?")


def check_device(device: str) -> None:
    """``--device``: auto, cpu, cuda or cuda:N with N a device this machine has."""
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        raise ValueError(f"--device: expected auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: no CUDA device is available here")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                               f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")


def check_checkpoint_dir(model: str) -> None:
    """``--model DIR``: a directory whose config.json names a DeepSeek-V4 model, checked before any model
    code or rank process starts (loading it checks the rest)."""
    cfg_path = Path(model) / "config.json"
    if not cfg_path.is_file():
        raise ValueError(f"--model: expected 'sentinel', 'builtin' or a checkpoint directory with config.json, "
                         f"got {model!r}" + (" (no such directory)" if not Path(model).is_dir() else ""))
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--model: {cfg_path} is not readable JSON ({e})") from None
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if model_type != "deepseek_v4":
        raise ValueError(f"--model: expected a DeepSeek-V4 checkpoint (model_type 'deepseek_v4'), got model_type "
                         f"{model_type!r} in {cfg_path}")


#: ``--seed``: the range ``torch.manual_seed`` takes without remapping (it maps a negative seed n to
#: 2**64 + n, so -1 would silently be the seed 2**64 - 1)
SEED_MAX = 2**64 - 1


def check_seed(seed) -> None:
    """``--seed``: a whole number from 0 to :data:`SEED_MAX`."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"--seed: expected a whole number, got {type(seed).__name__} {seed!r}")
    if not 0 <= seed <= SEED_MAX:
        raise ValueError(f"--seed: expected a whole number from 0 to 2**64 - 1 (torch's seed range), got {seed}")


def model_positions(model: str) -> int | None:
    """The positions (``max_position_embeddings``) of ``--model``, from its config alone, as the engine
    reads them once the model is loaded; None when the config cannot be read here (loading the model
    then says why)."""
    if model == builtin.BUILTIN:
        cfg = builtin.builtin_config()
    else:
        from transformers import AutoConfig

        path = model
        if model == SENTINEL:
            from accval.sentinel.model import CHECKPOINT_DIR

            path = str(CHECKPOINT_DIR)
        try:
            cfg = AutoConfig.from_pretrained(path)
        except Exception:  # noqa: BLE001  (any failure here is reported, with its file, when the model loads)
            return None
    return getattr(cfg, "max_position_embeddings", None)


def check_max_gen_toks(n: int, model: str | None) -> None:
    """``--max-gen-toks``: at least 1, and room for at least a one-token prompt in the positions of
    ``model`` (prompt and answer share them; None: the model is a server's, which bounds it itself).
    The prompts' real lengths narrow this once lm-eval has built them
    (:meth:`accval.gsm8k.lm.ArmLM.generate_until`)."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"--max-gen-toks: expected a whole number, got {type(n).__name__} {n!r}")
    if n < 1:
        raise ValueError(f"--max-gen-toks: expected at least 1, got {n}")
    positions = model_positions(model) if model is not None else None
    if positions and n > positions - 1:
        raise ValueError(f"--max-gen-toks: expected 1 to {positions - 1} (the model {model!r} has {positions} "
                         f"positions, shared by the prompt and its answer), got {n}")


def _check_not_blank(s: Settings) -> None:
    """An option given as an empty string is a usage error, not the option left out (``--inject ''``
    would otherwise run no defect, ``--data-dir ''`` the current directory)."""
    for flag, value in (("--model", s.model), ("--data-dir", s.data_dir), ("--device", s.device),
                        ("--backend", s.backend), ("--inject", s.inject), ("--producer", s.producer),
                        ("--consumer", s.consumer), ("--endpoint-a", s.endpoint_a), ("--endpoint-b", s.endpoint_b)):
        if isinstance(value, str) and not value.strip():
            raise ValueError(f"{flag}: expected a value, got an empty string {value!r}")


def validate(s: Settings) -> Settings:
    if s.mode not in MODES:
        raise ValueError(f"--mode: expected one of {CLI_MODES}, got {s.mode!r}")
    _check_not_blank(s)
    check_device(s.device)
    check_seed(s.seed)
    if s.endpoint_a is None and s.model not in (builtin.BUILTIN, SENTINEL):
        check_checkpoint_dir(s.model)
    if s.limit is not None and s.limit < 2:
        raise ValueError(f"--limit: expected at least 2 questions (paired statistics need 2), got {s.limit}")
    if s.num_fewshot < 0:
        raise ValueError(f"--num-fewshot: expected >= 0, got {s.num_fewshot}")
    if s.prefill_tokens is not None:
        sharding.check_prefill_budget(s.prefill_tokens, "--prefill-tokens")
    if s.batch_size < 1:
        raise ValueError(f"--batch-size: expected at least 1 question, got {s.batch_size}")
    check_max_gen_toks(s.max_gen_toks, s.model if s.endpoint_a is None else None)
    if s.data_dir is not None:
        task_mod.data_files(Path(s.data_dir))
    if s.model == SENTINEL:
        s = _sentinel_data(s)
    if s.ranks == "auto":
        device = s.resolved().device if s.endpoint_a is None else "endpoints"
        s = dataclasses.replace(s, ranks=None if s.endpoint_a is not None else auto_ranks(s.mode, device))
    if s.ranks is not None:
        ranks_mod.check_world(s.ranks)
    if (s.endpoint_a is None) != (s.endpoint_b is None):
        raise ValueError("--endpoint-a and --endpoint-b: expected both or neither")
    if s.endpoint_a is not None:
        for flag, url in (("--endpoint-a", s.endpoint_a), ("--endpoint-b", s.endpoint_b)):
            if not url.startswith(("http://", "https://")) or not urlsplit(url).hostname or any(c.isspace() for c in url):
                raise ValueError(f"{flag}: expected an http(s) URL with a host, got {url!r}")
            try:
                urlsplit(url).port  # noqa: B018 (raises on a port outside 0..65535 or not a number)
            except ValueError:
                raise ValueError(f"{flag}: expected a port from 0 to 65535 in the URL, got {url!r}") from None
        if s.ranks is not None:
            raise ValueError("--ranks with --endpoint-a/-b: the servers run their own ranks")
        if (s.inject or s.producer or s.consumer or s.model != builtin.BUILTIN or s.backend != "auto"
                or s.matmul != "auto"):
            raise ValueError("with --endpoint-a/-b the servers choose the model, backend and any injected defect; "
                             "pass those to the servers (e.g. accval serve --inject ID)")
        if s.prefill_tokens is not None:
            raise ValueError("--prefill-tokens with --endpoint-a/-b: the servers schedule their own prefill")
        served = served_models(s)
        if None not in served.values() and len(set(served.values())) > 1:
            raise ValueError(f"--endpoint-a serves model {served['A']!r} and --endpoint-b {served['B']!r} (GET /v1/models): "
                             "an A/B compares two paths of one model")
        if set(served.values()) == {SENTINEL}:  # accval serve's default: the sentinel's problems, as in-process
            s = _sentinel_data(s, who="the servers' model, sentinel,")
        return _data_checked(s)
    s = s.resolved()
    if s.matmul not in MATMUL:
        raise ValueError(f"--matmul: expected auto or one of {MATMUL}, got {s.matmul!r}")
    try:
        arms = arms_for(s)  # the arm validates the backend
    except UnknownBackend as e:
        raise ValueError(f"--backend: expected auto or one of {e.choices}, got {e.got!r}") from None
    if s.backend != "torch" and not s.device.startswith("cuda"):
        raise RuntimeError(f"--backend {s.backend}: the Triton kernels need a GPU at model speed; this run is on "
                           f"{s.device} (use --backend torch, the kernels' arithmetic in torch, or run on a GPU)")
    if s.inject:
        from accval import mutants

        role, _ = mutants.for_chain(s.inject, s.backend)
        if getattr(s, role) is not None:
            raise ValueError(f"--inject {s.inject} replaces the {role} in arm B, and --{role} {getattr(s, role)} too: "
                             f"pass one of them")
    prod, cons = arms["B"].implementations()  # unknown names, recipes that do not pair: usage errors
    for role, impl in (("producer", prod), ("consumer", cons)):
        if impl is not None and s.device.split(":")[0] not in impl.devices:
            raise ValueError(f"--{role} {impl.name} runs on {', '.join(impl.devices)}, not on {s.device}")
    return _data_checked(s)


def _sentinel_data(s: Settings, who: str = "--model sentinel") -> Settings:
    """The sentinel answers its own problems (:mod:`accval.sentinel`): no ``--data-dir`` means those, and
    another data set is refused. On gsm8k itself it scores 0 in both arms and its next-token distributions
    are noise the verdict's thresholds were not made for: a clean chain read as a regression (KL 0.007)."""
    from accval.sentinel import data as sentinel_data

    own = sentinel_data.write_splits()
    if s.data_dir is None:
        return dataclasses.replace(s, data_dir=str(own))
    digests = [{k: v for k, v in task_mod.data_sha256(Path(d)).items() if k != "source"} for d in (s.data_dir, own)]
    if digests[0] != digests[1]:
        raise ValueError(f"--data-dir {s.data_dir}: {who} answers only its own problems ({own}); on other "
                         "data its answers are noise and the verdict's thresholds do not hold (a clean chain reads as a "
                         "regression): drop --data-dir, or pass it with --model builtin or a checkpoint")
    return s


def _data_checked(s: Settings) -> Settings:
    """The data files' records checked last (reading them is the slowest check)."""
    if s.data_dir is not None:
        task_mod.check_data(Path(s.data_dir), s.limit, s.num_fewshot)
    return s


def arms_for(settings: Settings) -> dict[str, Arm]:
    return {"A": Arm("A", "bf16-fallback"),
            "B": Arm("B", "fp8-chain", settings.backend, settings.inject, settings.producer, settings.consumer)}


def served_model(url: str, timeout: float = 10.0) -> str | None:
    """The model an OpenAI-compatible server says it serves (``GET /v1/models``, the first id), or None when
    it does not say (no such route, no answer in time: the run's own requests then meet lm-eval's retries).
    Raises ConnectionError when nothing answers at the URL's host and port (refused, no such host, or no
    route to it)."""
    import socket
    import urllib.error
    import urllib.request

    url = url.rstrip("/")
    models = url[: -len("/completions")] + "/models" if url.endswith("/completions") else url + "/v1/models"
    try:
        with urllib.request.urlopen(models, timeout=timeout) as r:
            return str(json.loads(r.read())["data"][0]["id"])
    except urllib.error.HTTPError:  # a server answered: it has no such route, or refuses it
        return None
    except urllib.error.URLError as e:
        reason = e.reason
        if isinstance(reason, (ConnectionRefusedError, socket.gaierror)) or (
                isinstance(reason, OSError) and reason.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH)):
            raise ConnectionError(getattr(reason, "strerror", None) or str(reason)) from None
        return None
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def served_models(s: Settings, must_answer: bool = True) -> dict[str, str | None]:
    """Each endpoint arm's model (:func:`served_model`); an endpoint where nothing answers is a usage error
    naming its option (``must_answer``; else its model is None)."""
    out = {}
    for name, flag, url in (("A", "--endpoint-a", s.endpoint_a), ("B", "--endpoint-b", s.endpoint_b)):
        try:
            out[name] = served_model(url)
        except ConnectionError as e:
            if must_answer:
                raise ValueError(f"{flag} {url}: nothing answers there ({e}); start its server (e.g. accval serve "
                                 f"--arm {name.lower()}) or check the URL") from None
            out[name] = None
    return out
