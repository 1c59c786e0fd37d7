"""Every call records which implementation ran; a backend that cannot run raises, never falls back."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import triton.language as tl

import accval.kernels as kernels
from accval.kernels import provenance
from accval.kernels.constants import FP8_DTYPE, pad4

from .cases import ProducerCase, make_inputs


def _consumer_inputs(device, g=2, m=9, n=128, k=256):
    a = torch.randn(g, m, k).to(FP8_DTYPE).to(device)
    a_scale = torch.zeros(g, k // 128, pad4(m), device=device)
    a_scale[:, :, :m] = 0.5
    b = torch.randn(g, n, k).to(FP8_DTYPE).to(device)
    return a, a_scale, b, torch.full((g, n // 128, k // 128), 0.25, device=device)


@pytest.mark.any_device
def test_producer_records_what_ran_or_raises(producer, device):
    """Where the producer under test runs, it records exactly the implementation it claims
    (accval_expected_impl); on a device it does not declare (accval_devices), calling it raises instead
    of falling back, as :func:`test_consumer_records_what_ran_or_raises` asks of a consumer."""
    case = ProducerCase(m=9)
    o, pos, cache = make_inputs(case, device)
    if device.type not in producer.devices:
        with provenance.capture() as ran:
            with pytest.raises((RuntimeError, ValueError, TypeError)):
                producer.raw(*case.args(o, pos, cache))
        assert not [r for r in ran if r.op == "producer"], f"{producer.name!r} ran {ran} instead of raising"
        return
    if producer.expected_impl is None:
        pytest.skip(f"producer {producer.name!r} declares no accval_expected_impl")
    with provenance.capture() as ran:
        producer(*case.args(o, pos, cache))
    impls = {r.impl for r in ran if r.op == "producer"}
    assert impls == {producer.expected_impl}, f"producer {producer.name!r} claims {producer.expected_impl!r}, ran {impls}"


def test_consumer_records_what_ran_or_raises(consumer, device):
    """Where the consumer under test can run, exactly its claimed backend runs; where it cannot
    (e.g. torch._scaled_mm on a CPU), calling it raises an error instead of falling back: RuntimeError
    (NotImplementedError too: a custom op with no kernel for that device), or the ValueError or TypeError a
    Triton launch raises on tensors it cannot read."""
    args = _consumer_inputs(device)
    if device.type not in consumer.devices:
        with provenance.capture() as ran:
            with pytest.raises((RuntimeError, ValueError, TypeError)):
                consumer(*args)
        assert not [r for r in ran if r.op == "consumer"], f"{consumer.name!r} ran {ran} instead of raising"
        return
    if consumer.expected_impl is None:
        pytest.skip(f"consumer {consumer.name!r} declares no accval_expected_impl")
    with provenance.capture() as ran:
        consumer(*args)
    impls = {r.impl for r in ran if r.op == "consumer"}
    assert impls == {consumer.expected_impl}, f"consumer {consumer.name!r} claims {consumer.expected_impl!r}, ran {impls}"


#: (1023, straight) runs 1023 programs in the CPU interpreter (~30 s); on a CPU under ci the boundary is
#: still pinned from above by (1024, loop), and the GPU and nightly runs take it.
@pytest.mark.parametrize("m,btm,kernel", [(1, 1, "straight"), pytest.param(1023, 1, "straight", marks=pytest.mark.slow_cpu),
                                          (1024, 8, "loop"), (2048, 16, "loop"), (4096, 32, "loop")])
def test_dispatch_is_recorded(device, m, btm, kernel):
    """accval's producer records the dispatch branch it took (sm100 table; Hopper's table in the kernel file)."""
    cfg = kernels.config_for(m, device)
    case = ProducerCase(m=m, n_groups=1, heads_per_group=1)
    o, pos, cache = make_inputs(case, device)
    with provenance.capture() as ran:
        kernels.inv_rope_fp8_quant(*case.args(o, pos, cache))
    (run,) = [r for r in ran if r.op == "producer"]
    assert run.detail("block_tokens_m") == cfg.block_tokens_m and run.detail("kernel") == (
        "straight" if cfg.block_tokens_m == 1 else "loop"), f"{run} vs {cfg}"
    if device.type == "cpu":  # the interpreter follows the B200 table the pull request shipped
        assert (cfg.block_tokens_m, run.detail("kernel")) == (btm, kernel)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_gptj_reads_pairs_as_words_where_rows_start_on_a_pair(device, dtype):
    """GPT-J's rotation pairs are adjacent: where o's rows start on a pair (as torch allocates them) the
    kernel loads each pair as one word; where they do not it splits the row in registers: o one
    element into its buffer with the same shape and strides (right after the aligned call, so a plan
    cached by layout alone would reuse the word kernel), and o with odd strides. The launch gets the
    word type its record names, and both give the mirror's codes and scales."""
    import importlib

    from accval.kernels.reference import inv_rope_fp8_quant_ref

    from .checks import assert_exact, assert_fp8_equal

    producer = importlib.import_module("accval.kernels.inv_rope_fp8_quant")  # the package's name is the function
    case = ProducerCase(m=6, n_groups=2, heads_per_group=2, head_dim=256, rope_dim=64, is_neox=False, dtype=dtype)
    o, pos, cache = make_inputs(case, device)
    o = o.contiguous()
    off_pair = torch.empty(o.numel() + 1, dtype=dtype, device=device)[1:].view(o.shape)
    odd_strides = torch.empty(case.m, case.heads, case.head_dim + 1, dtype=dtype, device=device)[:, :, :-1]
    want_fp8, want_scale = inv_rope_fp8_quant_ref(*case.args(o.cpu(), pos.cpu(), cache.cpu()), is_neox=False)
    word = {2: torch.int32, 4: torch.int64}[o.element_size()]
    for x, words in ((o, True), (off_pair, False), (odd_strides, False)):
        x.copy_(o)
        args = case.args(x, pos, cache)
        with provenance.capture() as ran:
            fp8, scale = kernels.inv_rope_fp8_quant(*args, is_neox=False)
        (run,) = [r for r in ran if r.op == "producer"]
        plan = producer._plan(*args, 128, False, None, False)
        ctx = f"o strides {x.stride()} offset {x.storage_offset()}: {run}"
        assert plan.launcher.meta["PAIR_WORD"] == ({torch.int32: tl.int32, torch.int64: tl.int64}[word] if words else None), ctx
        assert run.detail("gptj_pairs") == (f"{8 * word.itemsize}-bit words" if words else "split in registers"), ctx
        assert_fp8_equal(fp8.cpu(), want_fp8, f"codes, {run.detail('gptj_pairs')}", str(case))
        assert_exact(scale.cpu(), want_scale, f"scales, {run.detail('gptj_pairs')}", str(case))


def test_gptj_pairs_need_an_aligned_output_too(device):
    """A launch into caller buffers (the defect catalog's) reads pairs as words only where the fp8 buffer's
    rows start on a pair as well; a buffer whose last dim is not contiguous is refused, naming it."""
    from accval.kernels.constants import FP8_DTYPE as F8
    from accval.kernels.inv_rope_fp8_quant import config_for, producer_launch, validate_producer_args

    case = ProducerCase(m=5, n_groups=2, heads_per_group=1, is_neox=False)
    o, pos, cache = make_inputs(case, device)
    p = validate_producer_args(*case.args(o, pos, cache), is_neox=False)
    scale = torch.zeros(p.scale_shape(), device=device)
    cfg = config_for(p.m, device, is_neox=False)
    aligned = torch.zeros(p.fp8_shape(), dtype=F8, device=device)
    odd_rows = torch.zeros(case.n_groups, case.m, p.k + 1, dtype=F8, device=device)[:, :, :p.k]
    for fp8, word in ((aligned, tl.int32), (odd_rows, None)):
        launcher = producer_launch(p, o, pos, cache, fp8, scale, cfg)[0]
        assert launcher.meta["PAIR_WORD"] == word, fp8.stride()
    strided = torch.zeros(case.n_groups, case.m, 2 * p.k, dtype=F8, device=device)[:, :, ::2]
    with pytest.raises(ValueError, match="last dim is contiguous"):
        producer_launch(p, o, pos, cache, strided, scale, cfg)
    elsewhere = torch.empty(p.fp8_shape(), dtype=F8, device="meta")  # a direct launch would take its address
    with pytest.raises(ValueError, match="on o's device"):
        producer_launch(p, o, pos, cache, elsewhere, scale, cfg)


def test_hopper_dispatch_keeps_enough_programs():
    """Hopper's producer rows take several heads per program only where the launch keeps enough
    programs: at TEP8 M=64 (16 heads, 1024 programs with one head) a program's latency is the time,
    and one head was faster on an H200; NEOX takes 4 heads from M=1024 where 8192 programs remain;
    GPT-J 2 heads with one warp at every M (kernels.inv_rope_fp8_quant.SM90_DISPATCH_MEASUREMENT). A
    program given fewer heads than its row keeps the row's warps per head (8 heads with 2 warps given
    2 heads: one warp). A forced count is taken as it is."""
    from accval.kernels.inv_rope_fp8_quant import LaunchConfig, _config, heads_per_program, warps_per_program

    def launch(arch, heads, m):
        cfg = _config(m, arch, True, None, None, None)
        hb = heads_per_program(cfg, heads, pad4(m))
        return hb, warps_per_program(cfg, hb)

    cases = [(16, 64), (16, 256), (128, 64), (16, 1024), (128, 1024), (16, 2048), (16, 4096), (16, 8192),
             (128, 8192), (1, 8192)]
    assert [launch("sm90", h, m) for h, m in cases] == [(1, 1), (2, 1), (2, 1), (2, 1), (4, 1), (4, 1), (4, 1),
                                                         (4, 1), (4, 1), (1, 1)]
    assert [launch("sm90-gptj", h, m) for h, m in cases] == [(1, 1)] + [(2, 1)] * 8 + [(1, 1)]
    wide = LaunchConfig(1, 2, 1, heads_per_program=8, min_programs=16384)  # a row of 8 heads with 2 warps
    assert [(hb := heads_per_program(wide, h, m), warps_per_program(wide, hb)) for h, m in cases] == [
        (1, 1), (1, 1), (1, 1), (1, 1), (8, 2), (2, 1), (4, 1), (8, 2), (8, 2), (1, 1)]
    # what launches is what the record says: the program's heads and warps
    from accval.kernels.inv_rope_fp8_quant import ProducerProblem, _launch_plan, _producer_run
    for groups, m, cfg, want in ((1, 2048, _config(2048, "sm90-gptj", True, None, None, None), (2, 1)),
                                 (8, 2048, wide, (8, 2))):
        problem = ProducerProblem(m, groups, 16, 512, 448, 64, False)
        launcher, grid = _launch_plan(problem, cfg, m, torch.bfloat16, tl.int64, True, 32, None)
        run = _producer_run("gpu", cfg, groups * 16, m, False, 32)
        assert (launcher.meta["HEADS"], launcher.meta["num_warps"]) == want, launcher.meta
        assert (run.detail("heads_per_program"), run.detail("num_warps")) == want and grid == (m, groups * 16 // want[0])
    from accval.kernels.inv_rope_fp8_quant import launched_config
    assert launched_config(_config(2048, "sm90-gptj", True, None, None, None), 16, 2048).endswith(
        "launched 2 heads, 1 warps per program")
    forced = _config(64, "sm90", True, None, None, 2)
    assert heads_per_program(forced, 16, 64) == 2
    forced = _config(8192, "sm90-gptj", True, None, None, 2)
    assert (heads_per_program(forced, 128, 8192), forced.num_warps) == (2, 1)
    with pytest.raises(ValueError, match="min_programs: expected an int >= 0"):
        dataclasses.replace(forced, min_programs=-1)


def test_neox_rope_slice_is_rotated_apart_in_large_launches_of_few_rows():
    """The NEOX kernel rotates the rope slice in a tile of its own in programs of at most
    ``ROPE_APART_MAX_ROWS`` rows in launches of at least ``ROPE_APART_MIN_PROGRAMS`` programs, in the
    row's tile otherwise (what an H200 measured: ``rope_apart``), and the record says which; at the
    DeepSeek-V4-Pro shapes on Hopper: apart at DEP8 M=64 (2 heads per program, 4096 programs) and TEP8
    M=1024 (8192), in the row's tile at TEP8 M=64 (1 head, 1024 programs) and M=256 (2048) and with 4
    heads per program (TEP8 M=8192)."""
    from accval.kernels.inv_rope_fp8_quant import ProducerProblem, _config, _launch_plan, _producer_run

    want = {("dep8", 64): True, ("dep8", 256): True, ("tep8", 64): False, ("tep8", 256): False,
            ("tep8", 1024): True, ("tep8", 8192): False}
    for (shape, m), apart in want.items():
        groups = 8 if shape == "dep8" else 1
        problem = ProducerProblem(m, groups, 16, 512, 448, 64, True)
        cfg = _config(m, "sm90", True, None, None, None)
        launcher, _ = _launch_plan(problem, cfg, pad4(m), torch.bfloat16, tl.int64, False, 0, None)
        run = _producer_run("gpu", cfg, groups * 16, pad4(m), True, 0)
        assert launcher.meta["ROPE_APART"] is apart, (shape, m, launcher.meta)
        assert run.detail("neox_rope") == ("apart" if apart else "in the row's tile"), (shape, m, run)
    loop = ProducerProblem(1024, 1, 16, 512, 448, 64, True)  # the loop kernel (B200's table): as before the rule
    for per_iter, apart in ((1, True), (2, True), (4, False)):
        cfg = _config(1024, "sm100", True, None, per_iter, None)
        assert _launch_plan(loop, cfg, 1024, torch.bfloat16, tl.int64, False, 0, None)[0].meta["ROPE_APART"] is apart, cfg
    gptj = ProducerProblem(64, 8, 16, 512, 448, 64, False)
    assert _launch_plan(gptj, _config(64, "sm90-gptj", True, None, None, None), 64, torch.bfloat16, tl.int64, False,
                        32, None)[0].meta["ROPE_APART"] is False
    assert _producer_run("gpu", _config(64, "sm90-gptj", True, None, None, None), 128, 64, False, 32).detail("neox_rope") is None


def test_config_for_reads_the_layouts_own_table(monkeypatch):
    """On an architecture with a GPT-J table, config_for gives GPT-J that table's row and NEOX the
    architecture's (Hopper at M=8192: NEOX 4 heads per program from 8192 programs, GPT-J 2 heads from
    2048); a forced straight kernel keeps the row for its M."""
    import importlib

    producer = importlib.import_module("accval.kernels.inv_rope_fp8_quant")  # the package's name is the function
    monkeypatch.setattr(producer, "_arch_key", lambda device: "sm90")
    cpu = torch.device("cpu")
    assert producer.config_for(8192, cpu, is_neox=True).heads_per_program == 4
    assert producer.config_for(8192, cpu, is_neox=True).min_programs == 8192
    assert producer.config_for(8192, cpu, is_neox=False).min_programs == 2048
    assert producer.config_for(8192, cpu, is_neox=False).heads_per_program == 2
    assert producer.config_for(512, cpu, is_neox=False).heads_per_program == 2
    assert producer.config_for(8192, cpu, is_neox=False, pair_words=False).heads_per_program == 2  # split rows
    assert producer.config_for(64, cpu, 1, is_neox=True).heads_per_program == 2
    assert producer.config_for(8192, cpu, 1, is_neox=True).heads_per_program == 4


def test_torch_backend_on_cpu_raises():
    """backend='torch' (torch._scaled_mm) on CPU tensors is an error, not a fallback."""
    args = _consumer_inputs(torch.device("cpu"))
    with pytest.raises(ValueError, match="expected CUDA tensors"):
        kernels.fp8_block_bmm(*args, backend="torch")


def test_unknown_backend_raises(device):
    with pytest.raises(ValueError, match="backend"):
        kernels.fp8_block_bmm(*_consumer_inputs(device), backend="cute-dsl")
