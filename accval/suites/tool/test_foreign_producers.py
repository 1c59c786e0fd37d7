"""The kernel suite judges producers it was not designed for: each example producer passes with no
false failure, and the same producer with a planted defect fails naming the violated property (and a
plugged consumer's chain failures are reported as its own).

The three examples differ in recipe and form: ``torch_producer`` (fp32-div, exact, torch),
``rcp_triton_producer`` (fp32-rcp, not exact, a Triton kernel run in the interpreter on a CPU, a
9-argument op) and ``ue8m0_gptj_producer`` (ue8m0, not exact, GPT-J only, ``[M, G, K]`` views).
Each runs the suite's core properties under the ``smoke`` Hypothesis profile in a child pytest (the
whole suite against each is the README's command, ``pytest suites/kernel --producer ...``); the
planted defects meet the suite's own checks in-process.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from accval.implementations import CONSUMERS, PRODUCERS, reference_producer_for
from accval.kernels.reference import fp8_block_bmm_math_ref
from accval.suites.kernel import test_consumer_chain, test_contract
from accval.suites.kernel.cases import ProducerCase
from accval.suites.kernel.test_consumer_chain import check_chain
from accval.testing import child_pytest_env, plugin_args

from . import needs_interpreter

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = ("torch_producer", "rcp_triton_producer", "ue8m0_gptj_producer")
CORE = ["suites/kernel/test_producer.py::test_producer_matches_mirror_reference",
        "suites/kernel/test_producer.py::test_producer_is_faithful_to_math",
        "suites/kernel/test_contract.py::test_layout_contract",
        "suites/kernel/test_contract.py::test_producer_opcheck",
        "suites/kernel/test_consumer_chain.py::test_chain_matches_math_reference",
        "suites/kernel/test_provenance.py::test_producer_records_what_ran_or_raises"]


def _pytest(producer: str, *tests: str) -> subprocess.CompletedProcess:
    env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE="smoke", ACCVAL_HYPOTHESIS_NO_SHRINK="1")
    return subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "-p", "no:cacheprovider", "-rs", "--producer",
                           f"accval.examples.{producer}", *tests], cwd=REPO, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_producer_passes_with_no_false_failure(example):
    """The core properties pass (skips only where the producer's declaration says so), and the summary
    line states its recipe and exactness."""
    proc = _pytest(f"{example}:inv_rope_fp8_quant", *CORE)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    line = next((ln for ln in out.splitlines() if ln.startswith(f"producer accval.examples.{example}:")), None)
    assert line is not None and ", 0 failed" in line, out[-3000:]
    assert "recipe=" in line and "exact=" in line, line
    # a producer not claiming the mirror's bits is told how many of its scales differ for more than the mirror's
    # rounding of the rotated slice to bf16 (TensorRT-LLM's differed in 49% of scales, none for that reason)
    assert ("not rounded to the input dtype" in line) == ("exact=no" in line), line


_PLAIN_PRODUCER = """from accval.examples.torch_producer import _producer


def quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128, is_neox=True):
    return _producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)
"""


@pytest.mark.parametrize("plugged, tests, reason", [
    (["--producer", "plain_producer:quant"], ["suites/kernel/test_contract.py::test_fake_matches_real"],
     "exposes no torch op"),
    (["--consumer", "torch"], ["suites/kernel/test_consumer_chain.py::test_consumer_matches_math_reference",
                               "suites/kernel/test_consumer_chain.py::test_chain_matches_math_reference"],
     "runs on ('cuda',), not cpu"),
], ids=["producer-without-op", "cuda-only-consumer"])
def test_what_a_declaration_rules_out_skips_saying_why(tmp_path, plugged, tests, reason):
    """A property a plugged implementation cannot have (a plain function has no op for the fake checks, as
    most users' first producer; a CUDA-only consumer on a CPU) skips with the reason, and nothing says an
    example failed (Hypothesis reports a skip inside an explicit example as "Failing explicit example")."""
    if "torch" in plugged and torch.cuda.is_available():
        pytest.skip("the torch consumer runs here (a CUDA GPU): nothing to skip")
    (tmp_path / "plain_producer.py").write_text(_PLAIN_PRODUCER)
    env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE="smoke", PYTHONPATH=f"{tmp_path}:{REPO}")
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "-p", "no:cacheprovider", "-rs",
                           *plugged, *tests], cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and re.search(r"^\d+ skipped in ", out, re.M) and reason in out, out[-3000:]
    assert "Failing explicit example" not in out, out[-3000:]


#: the consumer's and the chain's core properties
CONSUMER_CORE = ["suites/kernel/test_consumer_chain.py::test_consumer_matches_math_reference",
                 "suites/kernel/test_consumer_chain.py::test_chain_matches_math_reference",
                 "suites/kernel/test_consumer_chain.py::test_chain_explicit_sizes",
                 "suites/kernel/test_provenance.py::test_consumer_records_what_ran_or_raises"]


def test_example_consumer_passes_with_no_false_failure():
    """``accval.examples.torch_consumer`` (dequantize, one fp32 bmm: not accval's summation order) passes the
    consumer's and the chain's core properties with accval's producer, and its summary line says so."""
    env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE="smoke", ACCVAL_HYPOTHESIS_NO_SHRINK="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "-p", "no:cacheprovider", "-rs",
                           "--consumer", "accval.examples.torch_consumer:fp8_block_bmm", *CONSUMER_CORE],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out[-4000:] + proc.stderr[-2000:]
    line = next((ln for ln in out.splitlines() if ln.startswith("consumer accval.examples.torch_consumer:fp8_block_bmm:")), "")
    assert re.search(r"; [1-9]\d* passed, 0 failed", line) and "chain worst |err|/bound" in line, out[-3000:]


@pytest.mark.parametrize("k", [1152, 640])
def test_a_consumer_with_its_weight_in_bf16_rounds_to_nearest(k):
    """The example consumer with its dequantized weight rounded to bf16 (allowed by the contract) passes the
    rounding-direction property. With random fp32 scales each weight's bf16 rounding moved the 37 outputs of
    its column one way, and the property read that as a directed rounding (1815 vs 2397, p 3e-19, found
    with a tester's bf16-operand consumers); the math reference with its output truncated to bf16 fails."""
    rounds = test_consumer_chain.test_consumer_rounds_its_output_to_nearest
    rounds(CONSUMERS.get("accval.examples.torch_consumer:bf16_weight"), torch.device("cpu"), "fp32", k)

    class Truncated:
        name = "math reference, output truncated"

        def __call__(self, *args):
            exact = fp8_block_bmm_math_ref(*args).float()
            return (exact.view(torch.int32) & -65536).view(torch.float32).to(torch.bfloat16)

    with pytest.raises(AssertionError, match="rounded toward zero"):
        rounds(Truncated(), torch.device("cpu"), "fp32", k)


@needs_interpreter
def test_example_consumer_reading_scales_at_stride_m_fails_the_chain():
    """The example consumer with the scale rows read at stride M fails the chain at M = 7 (in-process; the
    child runs prove the plugin path), and the same case passes with the example itself."""
    producer = PRODUCERS.get("accval")
    case = ProducerCase(m=7, n_groups=2, heads_per_group=1, seed=7)
    with pytest.raises(AssertionError, match="exceeds bound"):
        check_chain(producer, CONSUMERS.get("accval.examples.torch_consumer:broken_stride"), case, torch.device("cpu"))
    assert check_chain(producer, CONSUMERS.get("accval.examples.torch_consumer:fp8_block_bmm"), case, torch.device("cpu")) <= 1


#: past this many tokens the planted kernels below take their "large-M path", as engine kernels dispatch by M
_LARGE_M = 1024


def _large_m_scale_rows_m_apart(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                quant_group_size=128, is_neox=True):
    """Planted defect: on its large-M path the producer lays a group's k-block scale rows M apart, not pad4(M)
    (the buffer has the contract's shape; group g still starts at g * K/128 * pad4(M))."""
    fp8, scale = _REFERENCE(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                            quant_group_size, is_neox)
    m = o.shape[0]
    if m < _LARGE_M:
        return fp8, scale
    g, blocks, rows = scale.shape
    laid = torch.zeros_like(scale).view(g, blocks * rows)
    for b in range(blocks):
        laid[:, b * m:(b + 1) * m] = scale[:, b, :m]
    return fp8, laid.view(g, blocks, rows)


def _large_m_reads_rows_m_apart(a, a_scale, b, b_scale):
    """Planted defect: on its large-M path the consumer reads the scale rows M apart, not pad4(M)."""
    g, m, k = a.shape
    if m >= _LARGE_M:
        a_scale = a_scale.reshape(-1)[: g * (k // 128) * m].reshape(g, k // 128, m)
    else:
        a_scale = a_scale[:, :, :m]
    return fp8_block_bmm_math_ref(a, torch.nn.functional.pad(a_scale, (0, (-m) % 4)), b, b_scale).to(torch.bfloat16)


_large_m_scale_rows_m_apart.accval_exact = True


def test_a_defect_on_the_large_m_path_alone_fails_the_explicit_sizes_a_cpu_runs():
    """A kernel's large-M path (M >= 1024 here) laying or reading the scale rows M apart shows only where
    pad4(M) != M. Every explicit size a CPU ran was below 1024 or a multiple of 4 (1500) through the chain,
    with K = 128 (one k-block) for the producer: both planted kernels passed `pytest suites/kernel` on a CPU."""
    from accval.implementations import _wrap_producer
    from accval.suites.kernel import test_producer
    from accval.suites.kernel.cases import CHAIN_CPU_SIZES, PRODUCER_CPU_SIZES, explicit_case

    cpu = torch.device("cpu")

    def failing(check, sizes) -> list[int]:
        failed = []
        for m in sizes:
            try:
                check(m)
            except AssertionError:
                failed.append(m)
        return failed

    producer = _wrap_producer("large_m_rows_m_apart", _large_m_scale_rows_m_apart).under_test()
    failed = failing(lambda m: test_producer.check_against_mirror(producer, explicit_case(m, m % 2 == 0), cpu),
                     PRODUCER_CPU_SIZES)
    assert failed and all(m >= _LARGE_M and m % 4 for m in failed), failed
    mirror = _wrap_producer("mirror", _REFERENCE)
    consumer = CONSUMERS.get(f"{__name__}:_large_m_reads_rows_m_apart")
    failed = failing(lambda m: check_chain(mirror, consumer, explicit_case(m, m % 2 == 1), cpu), CHAIN_CPU_SIZES)
    assert failed and all(m >= _LARGE_M and m % 4 for m in failed), failed


def _last_weight_scale_ignored(a, a_scale, b, b_scale):
    """Planted defect: the last k-block's weight scales read as 1."""
    b_scale = b_scale.clone()
    b_scale[..., -1] = 1.0
    return fp8_block_bmm_math_ref(a, a_scale, b, b_scale).to(torch.bfloat16)


def test_failure_messages_say_what_is_wrong_and_where():
    """A consumer computing wrong values failed the rounding property as "rounded toward zero" (or "away",
    case by case): it now fails first for being farther than any rounding from the product. A NaN read from
    the suite's garbage scale rows says where NaN can come from. Elements are named by their axes, and a
    scale padding row is said to be one."""
    from accval.suites.kernel.checks import at, scale_axes
    from accval.suites.kernel.test_consumer_chain import (
        test_consumer_matches_math_reference,
        test_consumer_rounds_its_output_to_nearest,
    )

    cpu = torch.device("cpu")
    wrong = CONSUMERS.get(f"{__name__}:_last_weight_scale_ignored")
    with pytest.raises(AssertionError, match=r"one bf16 spacing: any rounding of it\): \|err\| .* at \[g, m, n\] = ") as e:
        test_consumer_rounds_its_output_to_nearest(wrong, cpu, "fp32", 640)
    assert "rounded" not in str(e.value), str(e.value)
    stride_m = CONSUMERS.get("accval.examples.torch_consumer:broken_stride")
    with pytest.raises(AssertionError, match="non-finite where the reference is finite; first at .*padding rows"):
        test_consumer_matches_math_reference.hypothesis.inner_test(stride_m, cpu, dict(g=2, m=5, n=128, k=256, seed=1),
                                                                   "fp32")
    assert at((0, 1, 6), scale_axes("fp32-div"), rows=6).startswith("[g, kb, m] = (0, 1, 6) (a padding row: m >= M = 6")
    assert at((0, 1, 5), scale_axes("ue8m0-packed"), rows=6) == "[g, word, m] = (0, 1, 5)"


def _positions_16_bits(o, positions, cos_sin_cache, *args, **kwargs):
    """Planted defect: each position kept to its low 16 bits (an int16 index)."""
    return _REFERENCE(o, positions.long() & 0xFFFF, cos_sin_cache, *args, **kwargs)


def test_a_plugged_producer_meets_positions_up_to_the_models_context():
    """Plugged producers met positions below 4096 only (the long-context property ran accval's own kernel),
    so one keeping 16 bits of a position passed the whole suite; a correct one of another rope dim meets a
    2**20-row cache too (rows filled where drawn)."""
    from accval.implementations import _wrap_producer
    from accval.suites.kernel import test_producer

    cpu, record = torch.device("cpu"), lambda *args, **kwargs: None
    narrowed = _wrap_producer("positions_16_bits", _positions_16_bits).under_test()
    with pytest.raises(AssertionError, match="positions up to 104"):
        test_producer.test_long_context_positions_match_reference(narrowed, cpu, torch.int64, record)

    def mirror_64(*args, **kwargs):
        return _REFERENCE(*args, **kwargs)

    mirror_64.accval_exact, mirror_64.accval_rope_dims = True, (64,)
    test_producer.test_long_context_positions_match_reference(_wrap_producer("mirror_64", mirror_64).under_test(), cpu,
                                                              torch.int32, record)


def _scales_rounded_to_bf16(o, positions, cos_sin_cache, *args, **kwargs):
    """Planted defect: the recipe's scales rounded to bf16, the codes quantized at them (a faithful pair)."""
    from accval.kernels.constants import FP8_DTYPE

    fp8, scale = _REFERENCE(o, positions, cos_sin_cache, *args, **kwargs)
    rounded = scale.to(torch.bfloat16).float()
    g, m, k = fp8.shape
    s = rounded[:, :, :m].transpose(1, 2).repeat_interleave(128, dim=2)
    codes = torch.where(s > 0, fp8.float() * scale[:, :, :m].transpose(1, 2).repeat_interleave(128, dim=2)
                        / torch.where(s > 0, s, 1.0), 0.0)
    return codes.clamp(-448, 448).to(FP8_DTYPE), rounded


def test_scales_off_the_recipes_rule_by_more_than_the_rotations_rounding_fail():
    """A non-exact producer's scale may come from the mirror's absmax, the exact one's, or anything between,
    give or take the rotation's fp32 rounding. The window was widened by 2**-8 on top of that range, which
    passed a producer rounding every scale to bf16 (2**-9 off) through all of pytest suites/kernel (found by
    plugging one)."""
    from accval.implementations import _wrap_producer
    from accval.suites.kernel import test_producer

    producer = _wrap_producer("bf16_scales", _scales_rounded_to_bf16).under_test()
    with pytest.raises(AssertionError, match="outside the fp32-div window"):
        test_producer.check_against_mirror(producer, ProducerCase(m=37, n_groups=2, heads_per_group=2, seed=5),
                                           torch.device("cpu"))


def _exponent_bits_consumer(a, a_scale, b, b_scale):
    """A consumer of ue8m0 scales only that reads each fp32 scale's exponent bits (DeepGEMM on SM100 style)."""
    exps = ((a_scale.view(torch.int32) >> 23) & 0xFF).float() - 127
    return fp8_block_bmm_math_ref(a, torch.exp2(exps), b, b_scale).to(torch.bfloat16)


_exponent_bits_consumer.accval_recipe = "ue8m0"


def test_a_consumer_of_power_of_two_scales_is_given_power_of_two_scales():
    """A consumer declaring ue8m0 alone reads scales a ue8m0 producer writes, powers of two, and may read
    their exponent bits: the consumer properties drew any fp32 scale for it and it failed 6 of them, its
    chain passing (found by plugging one). Its scale format is fp32-pow2; a consumer of any fp32 recipe
    keeps fp32."""
    from accval.suites.kernel.test_consumer_chain import test_consumer_matches_math_reference

    consumer = CONSUMERS.get(f"{__name__}:_exponent_bits_consumer")
    assert consumer.scale_formats() == ("fp32-pow2",)
    assert CONSUMERS.get("accval").scale_formats() == ("fp32",)
    case, cpu = dict(g=2, m=5, n=128, k=640, seed=2), torch.device("cpu")
    test_consumer_matches_math_reference.hypothesis.inner_test(consumer, cpu, case, "fp32-pow2")
    with pytest.raises(AssertionError, match="exceeds bound"):
        test_consumer_matches_math_reference.hypothesis.inner_test(consumer, cpu, case, "fp32")


def test_a_plugged_consumers_chain_failures_are_its_own():
    """Plugged alone (accval's producer on the other side), a consumer that reads the scale rows at stride M
    (the catalog's defect) fails the chain tests, and the run's summary says so on the consumer's line
    with the chain's worst |err|/bound above 1; accval's producer, not under test, gets no line of failures."""
    env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE="smoke", ACCVAL_HYPOTHESIS_NO_SHRINK="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "-p", "no:cacheprovider",
                           "--consumer", "mutant:consumer-scale-stride-m",
                           "suites/kernel/test_consumer_chain.py::test_chain_explicit_sizes"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]
    line = next((ln for ln in out.splitlines() if ln.startswith("consumer mutant:consumer-scale-stride-m:")), "")
    failed = re.search(r"; \d+ passed, (\d+) failed", line)
    worst = re.search(r"chain worst \|err\|/bound \S+ ([0-9.e+]+|inf)", line)
    assert failed and int(failed.group(1)) > 0 and worst and float(worst.group(1)) > 1, out[-3000:]
    assert not any(ln.startswith("producer accval:") for ln in out.splitlines()), out[-3000:]


def test_with_both_sides_plugged_a_chain_failure_says_either_may_cause_it():
    """Both plugged: a chain failure counts on both lines (the pair fails together), and each line says how
    many of its failures are such shared ones, so a correct producer paired with a broken consumer is not
    read as failing on its own; the broken consumer's own property failure is not shared."""
    env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE="smoke", ACCVAL_HYPOTHESIS_NO_SHRINK="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "-p", "no:cacheprovider",
                           "--producer", "accval.examples.torch_producer:inv_rope_fp8_quant",
                           "--consumer", "accval.examples.torch_consumer:broken_stride",
                           "suites/kernel/test_consumer_chain.py::test_chain_explicit_sizes",
                           "suites/kernel/test_consumer_chain.py::test_consumer_writes_any_strided_out", "-k", "M5 or M3 or transposed"],
                          cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout
    assert proc.returncode == 1, out[-3000:] + proc.stderr[-2000:]
    lines = {ln.split(":", 1)[0]: ln for ln in out.splitlines() if ln.startswith(("producer accval.", "consumer accval."))}
    prod, cons = lines["producer accval.examples.torch_producer"], lines["consumer accval.examples.torch_consumer"]
    failed = int(re.search(r"; \d+ passed, (\d+) failed", prod).group(1))
    assert failed and f"({failed} of the failures in tests of both plugged sides together" in prod, prod
    shared = int(re.search(r"\((\d+) of the failures in tests of both", cons).group(1))
    assert int(re.search(r"; \d+ passed, (\d+) failed", cons).group(1)) > shared == failed, cons


def test_a_test_of_both_sides_counts_for_the_plugged_one_alone():
    """A test taking the producer and the consumer fixtures (the chain at the DSv4-Pro shape) counts, with one side
    plugged, for that side alone, as the chain_pair tests do (counted for accval's consumer too, a plugged
    producer's defect would read as failures of accval's consumer)."""
    env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE="smoke", ACCVAL_HYPOTHESIS_NO_SHRINK="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "-p", "no:cacheprovider",
                           "--producer", "reference:ue8m0", "suites/kernel/test_gpu_large.py::test_dsv4_chain_every_consumer",
                           "-k", "M1]"], cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert any(ln.startswith("producer reference:ue8m0: ") for ln in out.splitlines()), out[-3000:]
    assert not any(ln.startswith("consumer accval:") for ln in out.splitlines()), out[-3000:]


#: the DEP8 size at which the seed's token block (8) pads differently from pad4(M)
M1500 = ProducerCase(m=1500, n_groups=2, heads_per_group=1, is_neox=False, seed=1500)


@needs_interpreter
@pytest.mark.parametrize("example", EXAMPLES)
def test_scale_padded_to_block_tokens_fails_the_layout_contract(example):
    """Scales padded to max(BTM, 4) rows (the pull request's defect, visible at M=1500) fail the suite's
    layout property (its check, called here in-process: the child runs above prove the plugin path)."""
    producer = PRODUCERS.get(f"accval.examples.{example}:broken_pad")
    with pytest.raises(AssertionError, match="layout contract violated.*1504"):
        test_contract.check_layout_case(producer, M1500, torch.device("cpu"))


@needs_interpreter
@pytest.mark.parametrize("example", EXAMPLES)
def test_stale_fake_fails_fake_vs_real(example):
    """A fake that pads scales to max(BTM, 4) while the real op pads to 4 fails fake-vs-real at M=1500."""
    producer = PRODUCERS.get(f"accval.examples.{example}:broken_fake")
    with pytest.raises(AssertionError, match="fake != real: scale"):
        test_contract._fake_vs_real(producer, M1500, torch.device("cpu"))
    good = PRODUCERS.get(f"accval.examples.{example}:inv_rope_fp8_quant")
    test_contract._fake_vs_real(good, M1500, torch.device("cpu"))  # the control: the real fake agrees


@needs_interpreter
def test_a_producer_writing_its_input_fails_the_layout_contract_alone():
    """A producer that rotates the caller's ``o`` in place (SGLang's two-step path; the catalog's
    ``writes-input``) fails the layout contract, which hands it the caller's tensors; every other
    property gives it copies, so its numbers are still judged against the inputs as they were made."""
    from accval.kernels.reference import inv_rope_fp8_quant_ref
    from accval.suites.kernel.cases import make_inputs

    as_plugged = PRODUCERS.get("mutant:writes-input")
    producer = as_plugged.under_test()
    case = ProducerCase(m=5, n_groups=2, heads_per_group=1, head_dim=128, rope_dim=64, token_pad=8)
    with pytest.raises(AssertionError, match="wrote into its input o"):
        test_contract.check_layout_case(producer, case, torch.device("cpu"))
    o, pos, cache = make_inputs(case, torch.device("cpu"))
    before = o.clone()
    for _ in range(2):  # a second call sees the same o: the first wrote into a copy
        fp8, scale = producer(*case.args(o, pos, cache), is_neox=case.is_neox)
        ref_fp8, ref_scale = inv_rope_fp8_quant_ref(*case.args(o, pos, cache), is_neox=case.is_neox)
        assert torch.equal(fp8.view(torch.uint8), ref_fp8.view(torch.uint8)) and torch.equal(scale, ref_scale)
    assert torch.equal(o, before)
    as_plugged(*case.args(o, pos, cache), is_neox=case.is_neox)  # the A/B hands it the model's own o, as engines do
    assert not torch.equal(o, before)


def test_private_copy_keeps_layout_and_padding_and_passes_other_arguments_through():
    from accval.implementations import private_copy

    storage = torch.arange(5 * 40, dtype=torch.float32).view(5, 40)
    o = storage[:, 1:33].view(5, 4, 8)  # rows 40 apart, storage offset 1
    c = private_copy(o)
    assert (c.shape, c.stride(), c.storage_offset()) == (o.shape, o.stride(), o.storage_offset())
    assert torch.equal(c, o) and c.untyped_storage().data_ptr() != o.untyped_storage().data_ptr()
    gaps = c.as_strided((c.storage_offset() + 4 * 40 + 32,), (1,), 0)
    assert torch.equal(gaps, storage.flatten()[: gaps.numel()]), "the bytes between the rows are copied too"
    column = torch.arange(30).view(10, 3)[:, 2]
    assert private_copy(column).stride() == (3,) and torch.equal(private_copy(column), column)
    for other in (None, 3, [1, 2], torch.empty(0, 4)):
        assert private_copy(other) is other


def test_a_kwargs_wrapper_is_not_given_block_tokens_m():
    """Only a producer whose signature names ``block_tokens_m`` gets it: ``def f(*args, **kwargs)`` forwarding
    to a function without it would otherwise fail every forced token block with a TypeError."""
    from accval.implementations import _wrap_producer
    from accval.kernels.reference import inv_rope_fp8_quant_ref
    from accval.suites.kernel.cases import make_inputs

    def quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox):
        return inv_rope_fp8_quant_ref(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                                      quant_group_size, is_neox)

    def wrapper(*args, **kwargs):
        return quant(*args, **kwargs)

    def named(*args, block_tokens_m=None):
        return quant(*args)

    assert not _wrap_producer("wrapper", wrapper).accepts_block_tokens_m
    assert _wrap_producer("named", named).accepts_block_tokens_m
    case = ProducerCase(m=3, n_groups=1, heads_per_group=1, head_dim=128, rope_dim=64)
    o, pos, cache = make_inputs(case, torch.device("cpu"))
    _wrap_producer("wrapper", wrapper)(*case.args(o, pos, cache), is_neox=True, block_tokens_m=8)


@torch.library.custom_op("accval_tests::own_arguments_quant", mutates_args=())
def _own_arguments_op(o: torch.Tensor, positions: torch.Tensor, cos_sin_cache: torch.Tensor, heads_per_group: int,
                      n_groups: int, rope_dim: int, quant_group_size: int, chunks_per_head: int, amax_floor: float,
                      gptj: bool, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    from accval.kernels.reference import inv_rope_fp8_quant_ref

    assert rows == -(-o.shape[0] // 4) * 4 and chunks_per_head == o.shape[2] // quant_group_size and amax_floor == 0.0
    return inv_rope_fp8_quant_ref(o, positions, cos_sin_cache, n_groups, heads_per_group, o.shape[2] - rope_dim,
                                  rope_dim, quant_group_size, not gptj)


@_own_arguments_op.register_fake
def _(o, positions, cos_sin_cache, heads_per_group, n_groups, rope_dim, quant_group_size, chunks_per_head, amax_floor,
      gptj, rows):
    m, k = o.shape[0], heads_per_group * o.shape[2]
    return (o.new_empty((n_groups, m, k), dtype=torch.float8_e4m3fn),
            o.new_empty((n_groups, k // 128, rows), dtype=torch.float32))


def _own_arguments_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                         quant_group_size=128, is_neox=True):
    """An engine-style producer: its op takes the arguments its launch needs, in its own order and more of
    them (vLLM's takes 15), not the contract's."""
    return _own_arguments_op(o, positions, cos_sin_cache, heads_per_group, n_groups, rope_dim, quant_group_size,
                             o.shape[2] // quant_group_size, 0.0, not is_neox, -(-o.shape[0] // 4) * 4)


_own_arguments_quant.accval_op = torch.ops.accval_tests.own_arguments_quant
_own_arguments_quant.accval_exact = True


def test_an_op_with_its_own_arguments_is_opchecked_with_what_the_producer_passes():
    """opcheck is given the arguments the producer passes to its op, whatever the op's schema (calling it with
    the contract's arguments was a false failure for vLLM's producer op); declaring an op the producer never
    calls fails, naming the op."""
    from accval.implementations import _wrap_producer

    producer = _wrap_producer("own_arguments", _own_arguments_quant).under_test()
    for m, btm in ((3, 0), (7, 1)):  # btm=1 forces a block: the producer takes none, so that case skips
        if btm:
            with pytest.raises(pytest.skip.Exception, match="takes no block_tokens_m"):
                test_contract.test_producer_opcheck(producer, torch.device("cpu"), m, btm)
        else:
            test_contract.test_producer_opcheck(producer, torch.device("cpu"), m, btm)

    def declared_as_made(*args, **kwargs):
        return _own_arguments_quant(*args, **kwargs)

    # the object torch.library.custom_op returns, declared as it is: it crashed the test (AttributeError)
    declared_as_made.accval_op, declared_as_made.accval_exact = _own_arguments_op, True
    test_contract.test_producer_opcheck(_wrap_producer("as_made", declared_as_made).under_test(), torch.device("cpu"), 3, 0)

    def never_calls_it(*args, **kwargs):
        return _REFERENCE(*args, **kwargs)

    never_calls_it.accval_op = torch.ops.accval_tests.own_arguments_quant
    with pytest.raises(AssertionError, match="declares accval_op .* but did not call it"):
        test_contract.test_producer_opcheck(_wrap_producer("never", never_calls_it).under_test(), torch.device("cpu"), 3, 0)


#: the legacy two-step path as a producer (what the planted producers below wrap)
_REFERENCE = reference_producer_for("fp32-div")


def _dense_positions_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size=128, is_neox=True):
    """Reads positions as a kernel indexing ``positions_ptr + token`` does: densely from the view's start."""
    dense = torch.as_strided(positions, (positions.shape[0],), (1,))
    return _REFERENCE(o, dense, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                      is_neox)


def _dense_positions_declared(*args, **kwargs):
    """The same kernel, declaring that it reads positions as dense."""
    return _dense_positions_quant(*args, **kwargs)


_dense_positions_quant.accval_exact = _dense_positions_declared.accval_exact = True
_dense_positions_declared.accval_positions = "contiguous"


def test_a_kernel_reading_positions_as_dense_fails_saying_so_unless_it_declares_it():
    """TensorRT-LLM's and vLLM's producers read positions at ``positions_ptr + token``: a strided view gives
    them other tokens' positions, silently. Undeclared, the strided-positions properties fail and say what
    such a kernel does; declared (``accval_positions = "contiguous"``), they skip, saying so, and the adapter
    hands the kernel dense positions, so what it computes (in the suite and the A/B) is right."""
    from accval.implementations import _wrap_producer
    from accval.kernels.reference import inv_rope_fp8_quant_ref
    from accval.suites.kernel import test_nonfinite_and_strides as strides
    from accval.suites.kernel.cases import make_inputs

    cpu = torch.device("cpu")
    undeclared = _wrap_producer("dense_positions", _dense_positions_quant).under_test()
    with pytest.raises(AssertionError, match="reads positions as if contiguous"):
        strides.test_strided_positions_match_reference(undeclared, cpu, True, 2, torch.int64)
    with pytest.raises(AssertionError, match="reads positions as if contiguous"):
        strides.test_positions_column_of_a_matrix(undeclared, cpu, False)

    declared = _wrap_producer("dense_positions", _dense_positions_declared)
    assert "positions=contiguous" in declared.describe()
    with pytest.raises(pytest.skip.Exception, match="accval_positions='contiguous'"):
        strides.test_strided_positions_match_reference(declared.under_test(), cpu, True, 2, torch.int64)
    case = ProducerCase(m=7, n_groups=2, heads_per_group=1, head_dim=128, rope_dim=64)
    o, pos, cache = make_inputs(case, cpu)
    column = torch.stack((pos, pos.flip(0)), 1)[:, 0]  # stride 2
    fp8, scale = declared(*case.args(o, column, cache), is_neox=True)  # as the A/B calls it
    ref_fp8, ref_scale = inv_rope_fp8_quant_ref(*case.args(o, pos, cache), is_neox=True)
    assert torch.equal(fp8.view(torch.uint8), ref_fp8.view(torch.uint8)) and torch.equal(scale, ref_scale)

    def misdeclared(*args, **kwargs):
        return _dense_positions_quant(*args, **kwargs)

    misdeclared.accval_positions = "dense"
    with pytest.raises(ValueError, match="accval_positions expected one of"):
        _wrap_producer("misdeclared", misdeclared)


def _int64_positions_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size=128, is_neox=True):
    """An engine kernel taking int64 positions only (vLLM's are ``torch.long``), reading them through their stride."""
    if positions.dtype != torch.int64:
        raise TypeError(f"positions: expected torch.int64, got {positions.dtype}")
    return _REFERENCE(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                      is_neox)


def _int64_positions_declared(*args, **kwargs):
    return _int64_positions_quant(*args, **kwargs)


_int64_positions_quant.accval_exact = _int64_positions_declared.accval_exact = True
_int64_positions_declared.accval_positions_dtypes = (torch.int64,)


def test_a_kernel_taking_one_positions_dtype_declares_it_and_gets_it_with_the_same_strides():
    """A correct kernel taking int64 positions only failed every case the suite drew with int32 positions,
    with no way to say so. Declared (``accval_positions_dtypes``), it is handed int64 positions with the
    view's strides (so the strided-positions properties still judge how it reads them), by the suite and
    the A/B alike; a kernel reading them densely still fails those properties."""
    from accval.implementations import PluginError, _wrap_producer
    from accval.kernels.reference import inv_rope_fp8_quant_ref
    from accval.suites.kernel import test_nonfinite_and_strides as strides
    from accval.suites.kernel.cases import make_inputs

    cpu = torch.device("cpu")
    undeclared = _wrap_producer("int64_positions", _int64_positions_quant).under_test()
    with pytest.raises(TypeError, match="positions: expected torch.int64, got torch.int32"):
        strides.test_strided_positions_match_reference(undeclared, cpu, True, 2, torch.int32)
    declared = _wrap_producer("int64_positions", _int64_positions_declared)
    assert "positions_dtypes=int64" in declared.describe()
    strides.test_strided_positions_match_reference(declared.under_test(), cpu, True, 3, torch.int32)
    strides.test_positions_column_of_a_matrix(declared.under_test(), cpu, False)
    case = ProducerCase(m=7, n_groups=2, heads_per_group=1, head_dim=128, rope_dim=64, positions_dtype=torch.int32)
    o, pos, cache = make_inputs(case, cpu)
    fp8, scale = declared(*case.args(o, pos, cache), is_neox=True)  # as the A/B calls it
    ref_fp8, ref_scale = inv_rope_fp8_quant_ref(*case.args(o, pos, cache), is_neox=True)
    assert torch.equal(fp8.view(torch.uint8), ref_fp8.view(torch.uint8)) and torch.equal(scale, ref_scale)

    def dense_int64(o, positions, *args, **kwargs):
        return _dense_positions_quant(o, positions, *args, **kwargs)

    dense_int64.accval_exact, dense_int64.accval_positions_dtypes = True, "int64"
    with pytest.raises(AssertionError, match="reads positions as if contiguous"):
        strides.test_strided_positions_match_reference(_wrap_producer("dense_int64", dense_int64).under_test(), cpu,
                                                       True, 2, torch.int32)
    for bad in ("int16", ("int64", "int64"), ()):
        dense_int64.accval_positions_dtypes = bad
        with pytest.raises(PluginError, match="accval_positions_dtypes expected a non-empty tuple of distinct"):
            _wrap_producer("dense_int64", dense_int64)


def test_a_producer_of_one_head_size_meets_the_nonfinite_and_positions_properties():
    """A producer declaring only DeepSeek-V4's head (512; vLLM's packed-scale path) gets the non-finite and
    strided-positions cases moved to its head size instead of skipping them (they were written at 128/256)."""
    from accval.implementations import _wrap_producer
    from accval.suites.kernel import test_nonfinite_and_strides as strides

    def head_512(*args, **kwargs):
        return _REFERENCE(*args, **kwargs)

    head_512.accval_exact = True
    head_512.accval_head_dims = (512,)
    producer = _wrap_producer("head_512", head_512).under_test()
    cpu = torch.device("cpu")
    try:
        for is_neox in (True, False):
            strides.test_nonfinite_blocks_match_reference(producer, cpu, is_neox, float("nan"), torch.bfloat16)
            strides.test_nonfinite_values_stay_in_their_blocks(producer, cpu, is_neox, float("inf"), torch.bfloat16)
            strides.test_positions_column_of_a_matrix(producer, cpu, is_neox)
        strides.test_strided_positions_match_reference(producer, cpu, False, 3, torch.int32)
    except pytest.skip.Exception as e:
        pytest.fail(f"skipped instead of moved to the declared head size: {e}")


@torch.library.custom_op("accval_tests::own_arguments_bmm", mutates_args=())
def _own_arguments_bmm(b: torch.Tensor, b_scale: torch.Tensor, a: torch.Tensor, a_scale: torch.Tensor,
                       scale_rows: int) -> torch.Tensor:
    from accval.implementations import reference_consumer

    assert scale_rows == a_scale.shape[-1]
    return reference_consumer(a, a_scale, b, b_scale)


@_own_arguments_bmm.register_fake
def _(b, b_scale, a, a_scale, scale_rows):
    return a.new_empty((a.shape[0], a.shape[1], b.shape[1]), dtype=torch.bfloat16)


@torch.library.custom_op("accval_tests::own_arguments_bmm_padded_fake", mutates_args=())
def _own_arguments_bmm_padded_fake(b: torch.Tensor, b_scale: torch.Tensor, a: torch.Tensor, a_scale: torch.Tensor,
                                   scale_rows: int) -> torch.Tensor:
    return _own_arguments_bmm(b, b_scale, a, a_scale, scale_rows)


@_own_arguments_bmm_padded_fake.register_fake
def _(b, b_scale, a, a_scale, scale_rows):
    return a.new_empty((a.shape[0], scale_rows, b.shape[1]), dtype=torch.bfloat16)  # rows padded to 4: wrong


def test_a_consumer_op_with_its_own_arguments_is_checked_with_what_the_consumer_passes():
    """A consumer whose op takes its own arguments (here the weight first and the scale rows, as engine GEMM ops
    do) has its fake and opcheck run on the arguments it passes (it was skipped), and a fake that pads the rows
    fails."""
    from accval.implementations import _wrap_consumer
    from accval.suites.kernel import test_consumer_chain

    def own(a, a_scale, b, b_scale):
        return torch.ops.accval_tests.own_arguments_bmm(b, b_scale, a, a_scale, a_scale.shape[-1])

    def padded_fake(a, a_scale, b, b_scale):
        return torch.ops.accval_tests.own_arguments_bmm_padded_fake(b, b_scale, a, a_scale, a_scale.shape[-1])

    own.accval_op = torch.ops.accval_tests.own_arguments_bmm
    padded_fake.accval_op = torch.ops.accval_tests.own_arguments_bmm_padded_fake
    cpu = torch.device("cpu")
    try:
        test_consumer_chain.test_consumer_op_fake_matches_real_and_opcheck(_wrap_consumer("own", own), cpu, "fp32")
    except pytest.skip.Exception as e:
        pytest.fail(f"skipped instead of checked with the consumer's own arguments: {e}")
    with pytest.raises(AssertionError, match="fake != real"):
        test_consumer_chain.test_consumer_op_fake_matches_real_and_opcheck(_wrap_consumer("padded", padded_fake), cpu,
                                                                           "fp32")
    # the objects torch.library.custom_op returns, declared as they are: they crashed the test (AttributeError)
    own.accval_op, padded_fake.accval_op = _own_arguments_bmm, _own_arguments_bmm_padded_fake
    test_consumer_chain.test_consumer_op_fake_matches_real_and_opcheck(_wrap_consumer("own", own), cpu, "fp32")
    with pytest.raises(AssertionError, match="fake != real"):
        test_consumer_chain.test_consumer_op_fake_matches_real_and_opcheck(_wrap_consumer("padded", padded_fake), cpu,
                                                                           "fp32")


def test_a_gpu_only_consumer_raising_on_cpu_tensors_is_not_a_fallback():
    """A consumer declared for CUDA alone, called on CPU tensors, raises what its kernel raises there: a Triton
    launch raises ValueError ("Pointer argument (at 0) cannot be accessed from Triton (cpu tensor?)"), a custom op
    without a CPU kernel NotImplementedError. Either is an error, not a fallback, and passes; returning a result
    fails."""
    from accval.implementations import _wrap_consumer, reference_consumer
    from accval.suites.kernel import test_provenance

    def triton_launch(a, a_scale, b, b_scale):
        raise ValueError("Pointer argument (at 0) cannot be accessed from Triton (cpu tensor?)")

    def falls_back(a, a_scale, b, b_scale):
        return reference_consumer(a, a_scale, b, b_scale)

    for fn in (triton_launch, falls_back):
        fn.accval_devices = ("cuda",)
    cpu = torch.device("cpu")
    test_provenance.test_consumer_records_what_ran_or_raises(_wrap_consumer("triton_launch", triton_launch), cpu)
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        test_provenance.test_consumer_records_what_ran_or_raises(_wrap_consumer("falls_back", falls_back), cpu)


_RCP_REFERENCE = reference_producer_for("fp32-rcp")


def _rcp_reference(*args, **kwargs):
    """TensorRT-LLM's recipe as the mirror computes it, declared not exact: held to the graded bounds."""
    return _RCP_REFERENCE(*args, **kwargs)


def _last_tokens_lost(*args, **kwargs):
    """What a 32-bit offset past 2**31 elements does to the last tokens: their codes land elsewhere (here: none
    written) in one group."""
    fp8, scale = _rcp_reference(*args, **kwargs)
    fp8[1, -3:] = 0
    return fp8, scale


_rcp_reference.accval_recipe = _last_tokens_lost.accval_recipe = "fp32-rcp"


def test_large_m_token_windows_judge_a_producer_that_is_not_exact():
    """The DSv4-Pro M = 65536 check judged exact GPT-J producers only (every engine's producer skipped it): its
    token windows judge any producer, by the graded bounds when it is not exact, and a producer losing its last
    tokens in one group fails there."""
    from accval.implementations import _wrap_producer
    from accval.suites.kernel.test_gpu_large import check_token_windows

    cpu = torch.device("cpu")
    case = ProducerCase(m=70, n_groups=2, heads_per_group=1, head_dim=256, rope_dim=64, is_neox=False, seed=3)
    good = _wrap_producer("rcp_reference", _rcp_reference)
    assert not good.exact
    assert check_token_windows(good, case, cpu) == [(0, 64), (6, 70)]
    with pytest.raises(AssertionError, match="fp8 codes.*tokens 6..69 of a call at M=70"):
        check_token_windows(_wrap_producer("last_tokens_lost", _last_tokens_lost), case, cpu)


_NARROW_PRODUCERS = """import torch

from accval.examples.torch_producer import _producer


def bf16_only(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
              is_neox=True):
    if o.dtype != torch.bfloat16:
        raise NotImplementedError(f"this kernel takes bf16 o, got {o.dtype}")
    return _producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)


def declared_bf16_only(*args, **kwargs):
    return bf16_only(*args, **kwargs)


declared_bf16_only.accval_dtypes = (torch.bfloat16,)


def cuda_only(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
              is_neox=True):
    if o.device.type != "cuda":
        raise RuntimeError(f"this kernel runs on CUDA, got {o.device}")
    return _producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)


cuda_only.accval_devices = "cuda"


def cuda_only_falling_back(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                           quant_group_size=128, is_neox=True):
    return _producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size, is_neox)


cuda_only_falling_back.accval_devices = ("cuda",)
"""

_NARROW_TESTS = ["suites/kernel/test_producer.py::test_producer_matches_mirror_reference",
                 "suites/kernel/test_contract.py::test_layout_contract",
                 "suites/kernel/test_consumer_chain.py::test_chain_matches_math_reference",
                 "suites/kernel/test_provenance.py::test_producer_records_what_ran_or_raises"]


def _narrow(tmp_path, name: str) -> tuple[int, str]:
    (tmp_path / "narrow_producers.py").write_text(_NARROW_PRODUCERS)
    env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE="smoke", ACCVAL_HYPOTHESIS_NO_SHRINK="1",
                           PYTHONPATH=f"{tmp_path}:{REPO}")
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "-p", "no:cacheprovider", "-rs",
                           "--producer", f"narrow_producers:{name}", *_NARROW_TESTS], cwd=REPO, capture_output=True,
                          text=True, env=env, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_bf16_only_producer_declares_its_dtype_and_meets_no_false_failure(tmp_path):
    """Most engine kernels take bf16 ``o`` only. Undeclared, the suite's fp16 and fp32 cases make it fail;
    with ``accval_dtypes = (torch.bfloat16,)`` the same cases run in bf16 and it passes."""
    rc, out = _narrow(tmp_path, "bf16_only")
    assert rc == 1 and "this kernel takes bf16 o, got torch.float" in out, out[-3000:]
    rc, out = _narrow(tmp_path, "declared_bf16_only")
    line = next((ln for ln in out.splitlines() if ln.startswith("producer narrow_producers:declared_bf16_only:")), "")
    assert rc == 0 and "dtypes=bfloat16" in line and ", 0 failed" in line, out[-3000:]


@needs_interpreter
@pytest.mark.parametrize("name, passes", [("cuda_only", True), ("cuda_only_falling_back", False)])
def test_a_cuda_only_producer_skips_on_a_cpu_and_must_raise_there(tmp_path, name, passes):
    """``accval_devices = "cuda"`` on a CPU: the properties skip, saying why, and the one that checks the
    declaration passes when the producer raises on CPU tensors and fails when it runs anyway (a fallback)."""
    rc, out = _narrow(tmp_path, name)
    assert "runs on ('cuda',), not cpu (test_provenance checks it raises)" in out, out[-3000:]
    if passes:
        assert rc == 0 and re.search(r"^1 passed, \d+ skipped in ", out, re.M), out[-3000:]
    else:
        assert rc == 1 and "test_producer_records_what_ran_or_raises" in out and "DID NOT RAISE" in out, out[-3000:]


@pytest.mark.parametrize("attrs, needle", [
    ({"accval_rope_layout": ("gptj",)}, "unknown declaration(s) ['accval_rope_layout']"),
    ({"accval_devices": "cdua"}, "accval_devices expected a non-empty tuple of device types"),
    ({"accval_devices": ()}, "accval_devices expected a non-empty tuple of device types"),
    ({"accval_dtypes": "bf16"}, "accval_dtypes expected a non-empty tuple of distinct ['bfloat16', 'float16', 'float32']"),
    ({"accval_expected_impl": 3}, "accval_expected_impl expected the impl name its calls record"),
    ({"accval_op": "not an op"}, "accval_op expected a torch custom op"),
    ({"accval_op": print}, "accval_op expected a torch custom op"),
    ({"accval_amax_floor": float("inf")}, "accval_amax_floor expected a finite float >= 0, got inf"),
    ({"accval_rope_layouts": ("gptj", "gptj")}, "accval_rope_layouts expected a non-empty tuple of distinct values"),
], ids=["misspelt", "devices-typo", "devices-empty", "dtype-alias", "impl-not-str", "op-str", "op-function",
        "floor-inf", "layouts-twice"])
def test_a_nonsense_declaration_is_refused_before_any_test_runs(attrs, needle):
    from accval.implementations import PluginError, _wrap_producer

    def quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
              is_neox=True):
        raise AssertionError("never called")

    for k, v in attrs.items():
        setattr(quant, k, v)
    with pytest.raises(PluginError) as err:
        _wrap_producer("quant", quant)
    assert needle in str(err.value), str(err.value)


def test_declarations_accept_a_single_name_and_torch_dtypes():
    from accval.implementations import _wrap_consumer, _wrap_producer

    def quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
              is_neox=True):
        raise AssertionError("never called")

    quant.accval_devices, quant.accval_dtypes, quant.accval_op = "cuda", (torch.bfloat16, "float16"), torch.ops.aten.add
    p = _wrap_producer("quant", quant)
    assert (p.devices, p.dtypes, p.op) == (("cuda",), ("bfloat16", "float16"), torch.ops.aten.add)

    def bmm(a, a_scale, b, b_scale):
        raise AssertionError("never called")

    bmm.accval_exact = True  # a producer's declaration on a consumer is a mistake too
    with pytest.raises(ValueError, match=r"unknown declaration\(s\) \['accval_exact'\]"):
        _wrap_consumer("bmm", bmm)


_WRONG_DTYPE = """import torch

from accval.examples.torch_producer import _producer


def quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128, is_neox=True):
    fp8, scale = _producer(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size,
                           is_neox)
    return fp8.to(torch.bfloat16), scale
"""


def test_a_producer_returning_the_wrong_dtype_is_told_so_by_every_property(tmp_path):
    """Codes returned as bf16: every property fails saying so in one line (the value comparisons crashed with
    "The size of tensor a (256) must match the size of tensor b (128)"), and the summary repeats it."""
    (tmp_path / "wrong_dtype.py").write_text(_WRONG_DTYPE)
    env = child_pytest_env(ACCVAL_HYPOTHESIS_PROFILE="smoke", ACCVAL_HYPOTHESIS_NO_SHRINK="1",
                           PYTHONPATH=f"{tmp_path}:{REPO}")
    proc = subprocess.run([sys.executable, "-m", "pytest", *plugin_args(env), "-q", "-p", "no:cacheprovider",
                           "--producer", "wrong_dtype:quant", "suites/kernel/test_producer.py::test_producer_matches_mirror_reference",
                           "suites/kernel/test_producer.py::test_explicit_sizes_match_reference"], cwd=REPO,
                          capture_output=True, text=True, env=env, timeout=600)
    out = proc.stdout
    assert proc.returncode == 1 and "must match the size of tensor" not in out, out[-3000:]
    failed = [ln for ln in out.splitlines() if ln.startswith("  failed ")]
    assert failed and all("outputs: fp8 dtype torch.bfloat16 != float8_e4m3fn" in ln for ln in failed), out[-3000:]


def test_strides_of_size_one_dimensions_are_not_a_layout():
    """At M = 1 (a decode step) or G = 1 (TEP8 at the DSv4-Pro shape) a buffer's memory does not depend on
    the stride of its size-1 dimension: ``x.reshape(M, G, K).transpose(0, 1).contiguous()`` at M = 1 is
    the contract's buffer byte for byte (torch calls it contiguous), and so is a contiguous ``[M, 1, K]``
    returned as an ``mgk-view``. Neither is a violation; the same buffers with a padded dimension are."""
    from accval.implementations import ContractViolation, physical_buffers
    from accval.kernels.constants import FP8_DTYPE
    from accval.kernels.recipes import get_recipe
    from accval.suites.kernel.checks import check_layout

    codes = torch.zeros(1, 2, 128).to(FP8_DTYPE).transpose(0, 1).contiguous()  # [G=2, M=1, K]
    assert codes.stride() == (128, 256, 1) and codes.is_contiguous()
    check_layout(codes, torch.zeros(2, 1, 4), 2, 1, 128, "")
    padded = torch.zeros(2, 4, 128).to(FP8_DTYPE)[:, :3]  # [G, M=3, K] with rows pad4(M) apart
    with pytest.raises(AssertionError, match="fp8 strides"):
        check_layout(padded, torch.zeros(2, 1, 4), 2, 3, 128, "")

    recipe = get_recipe("fp32-div")
    fp8, scale = torch.zeros(5, 1, 128).to(FP8_DTYPE), torch.zeros(1, 1, 8).permute(2, 0, 1)[:5]  # G = 1
    phys_fp8, phys_scale = physical_buffers(fp8, scale, 1, 5, 128, recipe)
    assert phys_fp8.shape == (1, 5, 128) and phys_scale.shape == (1, 1, 8) and phys_scale.stride() == (8, 8, 1)
    with pytest.raises(ContractViolation, match="fp8: the \\[M, G, K\\] view has strides"):
        physical_buffers(torch.zeros(5, 2, 128).to(FP8_DTYPE), torch.zeros(2, 1, 8).permute(2, 0, 1)[:5], 2, 5, 128, recipe)


def test_the_contract_names_exactly_the_declarations_each_side_takes():
    """docs/contract.md's table lists every attribute the registry accepts, and names the consumer's."""
    from accval.implementations import CONSUMER_ATTRS, PRODUCER_ATTRS

    text = (REPO / "docs" / "contract.md").read_text()
    table = set(re.findall(r"^\| `(accval_\w+)`(?:, `(accval_\w+)`)?", text, re.M))
    listed = {name for row in table for name in row if name}
    assert listed == set(PRODUCER_ATTRS) | set(CONSUMER_ATTRS), listed ^ (set(PRODUCER_ATTRS) | set(CONSUMER_ATTRS))
    sentence = re.search(r"A consumer takes (.*?); the others", text, re.S).group(1)
    assert set(re.findall(r"`(accval_\w+)`", sentence)) == set(CONSUMER_ATTRS)
