"""accval's host path (``accval.kernels.host``): a cached plan never lets a bad call through, every call is
recorded, and a direct launch never reuses a kernel compiled for another specialization."""

from __future__ import annotations

import gc
import sys
import types
import weakref
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import accval.kernels as kernels
from accval.kernels import host, provenance
from accval.kernels.constants import FP8_DTYPE, pad4
from accval.kernels.fp8_block_bmm import consumer_launches

from .cases import ProducerCase, make_inputs, tma_m

#: the folder of accval's kernel files (descriptors built there, not by Triton's interpreter)
KERNELS_DIR = Path(kernels.__file__).resolve().parent

CASE = ProducerCase(m=5, n_groups=2, heads_per_group=2)


def _produce(o, pos, cache, **kw):
    return kernels.inv_rope_fp8_quant(*CASE.args(o, pos, cache), **kw)


def _consumer_inputs(device, g=2, m=6, n=128, k=256):
    a = torch.randn(g, m, k).to(FP8_DTYPE).to(device)
    a_scale = torch.rand(g, k // 128, pad4(m), device=device)
    b = torch.randn(g, n, k).to(FP8_DTYPE).to(device)
    return a, a_scale, b, torch.rand(g, n // 128, k // 128, device=device)


def test_cached_producer_layout_still_checks_positions(device):
    """A call whose layout is cached still reads and checks its positions wherever they are checked
    (on the CPU always, on CUDA with ``check_positions=True``): positions are data, never in the key."""
    o, pos, cache = make_inputs(CASE, device)
    for _ in range(2):  # the second call finds the plan
        _produce(o, pos, cache, check_positions=True)
    bad = pos.clone()
    bad[3] = cache.shape[0]
    with pytest.raises(ValueError, match="positions: expected values in"):
        _produce(o, bad, cache, check_positions=True)
    with pytest.raises(ValueError, match="positions: expected values in"):
        _produce(o, -pos - 1, cache, check_positions=True)


def test_cached_consumer_layout_still_keeps_out_apart(device):
    """``out`` sharing bytes with an input is refused even when a call of the same layout (shapes,
    strides, dtypes, devices) was accepted before: where the tensors lie is checked on every call."""
    a, a_scale, b, b_scale = _consumer_inputs(device)
    out = torch.zeros(2, 6, 128, dtype=torch.bfloat16, device=device)
    for _ in range(2):
        kernels.fp8_block_bmm(a, a_scale, b, b_scale, out=out)
    shared = torch.zeros(2, 6, 128, dtype=torch.bfloat16, device=device)
    aliased = shared.view(-1).view(torch.float32)[: a_scale.numel()].view(a_scale.shape).copy_(a_scale)
    assert (aliased.shape, aliased.stride(), aliased.dtype) == (a_scale.shape, a_scale.stride(), a_scale.dtype)
    with pytest.raises(ValueError, match="out: expected memory apart from the inputs.*a_scale"):
        kernels.fp8_block_bmm(a, aliased, b, b_scale, out=shared)


def test_cached_raw_consumer_layout_still_checks_storage(device):
    """The raw consumer reads dense ``[G, M, K]`` from ``a``'s first element: a view of the same layout
    over a storage too small for that is refused after one over a large enough storage was accepted."""
    g, m, k = 2, 3, 128
    _, a_scale, b, b_scale = _consumer_inputs(device, g=g, m=m, k=k)
    big = torch.randn(g, m, k).to(FP8_DTYPE).to(device)
    small = torch.randn(1, m, k).to(FP8_DTYPE).to(device)
    fits, short = big[:1].expand(g, m, k), small.expand(g, m, k)  # stride 0 over the groups
    assert (fits.shape, fits.stride()) == (short.shape, short.stride())
    for _ in range(2):
        kernels.fp8_block_bmm(fits, a_scale, b, b_scale, check_contract=False)
    with pytest.raises(ValueError, match="a: expected storage for"):
        kernels.fp8_block_bmm(short, a_scale, b, b_scale, check_contract=False)


def test_cached_o_a_proj_layout_is_checked_once_and_still_refuses(device, monkeypatch):
    """Both arms of o_a_proj check a layout (the producer's arguments and the weight) once; a call of
    another layout is checked in full and refused as before, and on a CPU the positions' values are
    checked on every call."""
    from accval.kernels import o_a_proj

    o, pos, cache = make_inputs(CASE, device)
    k = CASE.heads_per_group * CASE.head_dim
    w = torch.randn(CASE.n_groups, 128, k).to(FP8_DTYPE).to(device)
    ws = torch.rand(CASE.n_groups, 1, k // 128, device=device)
    monkeypatch.setattr(o_a_proj, "_LAYOUTS", host.PlanCache())  # whatever earlier tests cached
    checks = []
    real = o_a_proj.validate_producer_args
    monkeypatch.setattr(o_a_proj, "validate_producer_args", lambda *a, **kw: checks.append(1) or real(*a, **kw))
    args = CASE.args(o, pos, cache)
    first = kernels.o_a_proj_fp8_chain(args[0], args[1], args[2], w, ws, *args[3:], backend="torch")
    again = kernels.o_a_proj_fp8_chain(args[0], args[1], args[2], w, ws, *args[3:], backend="torch")
    kernels.o_a_proj_bf16_fallback(args[0], args[1], args[2], w, ws, *args[3:])
    assert len(checks) == 1, f"a layout seen before was checked {len(checks)} times"
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="w_fp8: expected"):
        kernels.o_a_proj_fp8_chain(o, pos, cache, w[:, :, :128], ws, *args[3:], backend="torch")
    with pytest.raises(TypeError, match="is_neox"):
        kernels.o_a_proj_fp8_chain(o, pos, cache, w, ws, *args[3:], is_neox=1, backend="torch")
    if device.type == "cpu":  # on CUDA the caller vouches for its positions, as with the producer
        bad = pos.clone()
        bad[2] = cache.shape[0]
        for arm in (kernels.o_a_proj_fp8_chain, kernels.o_a_proj_bf16_fallback):
            with pytest.raises(ValueError, match="positions: expected values in"):
                arm(o, bad, cache, w, ws, *args[3:])


def test_errors_are_not_cached(device):
    """A refused call leaves nothing behind: the same bad call is refused again, and a good call of a
    layout first seen as bad runs."""
    o, pos, cache = make_inputs(CASE, device)
    for _ in range(2):
        with pytest.raises(ValueError, match="nope_dim"):
            kernels.inv_rope_fp8_quant(o, pos, cache, 2, 2, 32, 64)
    with pytest.raises(TypeError, match="is_neox"):
        kernels.inv_rope_fp8_quant(*CASE.args(o, pos, cache), is_neox=1)  # 1 == True: the key must not confuse them
    _produce(o, pos, cache, is_neox=True)
    with pytest.raises(TypeError, match="is_neox"):
        kernels.inv_rope_fp8_quant(*CASE.args(o, pos, cache), is_neox=1)
    with pytest.raises(TypeError, match="n_groups"):
        kernels.inv_rope_fp8_quant(o, pos, cache, 2.0, 2, 64, 64)


def test_every_call_is_recorded(device):
    """Provenance is per call, cached plan or not: n calls record n runs of what ran."""
    o, pos, cache = make_inputs(CASE, device)
    a, a_scale, b, b_scale = _consumer_inputs(device)
    with provenance.capture() as ran:
        for _ in range(3):
            _produce(o, pos, cache)
            kernels.fp8_block_bmm(a, a_scale, b, b_scale)
    assert [r.op for r in ran] == ["producer", "consumer"] * 3, ran
    assert len({r for r in ran if r.op == "producer"}) == 1 and len({r for r in ran if r.op == "consumer"}) == 1, ran


def test_calls_under_a_dispatch_mode_go_through_the_op(device):
    """Under a dispatch mode (here FlopCounterMode) the public functions call their custom ops, whose
    results equal the direct call's."""
    o, pos, cache = make_inputs(CASE, device)
    fp8, scale = _produce(o, pos, cache)
    a, a_scale, b, b_scale = _consumer_inputs(device)
    out = kernels.fp8_block_bmm(a, a_scale, b, b_scale)
    assert host.eager_call()
    with FlopCounterMode(display=False):
        assert not host.eager_call()
        fp8_op, scale_op = _produce(o, pos, cache)
        out_op = kernels.fp8_block_bmm(a, a_scale, b, b_scale)
    assert torch.equal(fp8.view(torch.uint8), fp8_op.view(torch.uint8)) and torch.equal(scale, scale_op)
    assert torch.equal(out, out_op)


def test_torch_compile_traces_the_ops_not_the_cache(device):
    """Under ``torch.compile(fullgraph=True)`` the public functions trace to their custom ops (the plan
    cache is eager-only) and give the eager bits: the consumer everywhere, the producer and consumer
    chained on CUDA (on a CPU the producer's validation reads the positions, a graph break)."""
    o, pos, cache = make_inputs(CASE, device)
    fp8, scale = _produce(o, pos, cache)
    w_fp8, w_scale = kernels.quantize_weight_fp8(torch.randn(2, 128, 256, device=device) * 0.05)

    def consume(fp8, scale):
        return kernels.fp8_block_bmm(fp8, scale, w_fp8, w_scale)

    def chain(o, pos, cache):
        return consume(*_produce(o, pos, cache))

    assert torch.equal(consume(fp8, scale), torch.compile(consume, backend="eager", fullgraph=True)(fp8, scale))
    if device.type == "cuda":
        assert torch.equal(chain(o, pos, cache), torch.compile(chain, backend="eager", fullgraph=True)(o, pos, cache))


# ---------------------------------------------------------------------------------------------------
# Direct launches: the bookkeeping, with a stand-in for Triton's compiled kernel (no GPU needed).


class _Compiled:
    """What a direct launch calls on a compiled kernel; counts its launches."""

    def __init__(self):
        self.metadata = types.SimpleNamespace(target=types.SimpleNamespace(backend="cuda"))
        self.function, self.packed_metadata, self.launches = object(), object(), []

    def launch_metadata(self, grid, stream, *args):
        return ("metadata", grid, stream)

    def run(self, g0, g1, g2, stream, function, packed, launch_metadata, enter, exit_, *args):
        self.launches.append(((g0, g1, g2), stream, args))
        self.hooks = (launch_metadata, enter, exit_)


class _Driver:
    def __init__(self):
        self.device = 0

    def get_current_device(self):
        return self.device

    def get_current_stream(self, device):
        return 100 + device


@pytest.fixture
def fake_triton(monkeypatch):
    """A JIT kernel ``k(x_ptr, y_ptr, n, stride, BLOCK: constexpr)`` whose ``kernel[grid]`` compiles a
    :class:`_Compiled` per call, on a stand-in CUDA driver."""
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    def k(x_ptr, y_ptr, n, stride, BLOCK: tl.constexpr):
        pass

    kernel = JITFunction(k)
    compiles = []

    def run(*args, grid, warmup, **kwargs):
        compiles.append((grid, args, kwargs))
        return _Compiled()

    monkeypatch.setattr(kernel, "run", run)
    driver = _Driver()
    monkeypatch.setattr(host, "_driver", types.SimpleNamespace(active=driver))
    monkeypatch.setattr(host._platform, "interpreting", lambda: False)
    return kernel, compiles, driver


def test_direct_launch_reuses_only_its_own_specialization(fake_triton):
    """The second launch of a specialization calls the compiled kernel directly, with every argument in
    the kernel's order (constexprs last) on the current stream; a launch that differs in an integer,
    a dtype, a tensor's 16-byte alignment or the current device goes through ``kernel[grid]`` again."""
    kernel, compiles, driver = fake_triton
    launcher = host.Launcher(kernel, dict(BLOCK=64, num_warps=4))
    assert launcher.direct
    x = torch.zeros(64)
    y = torch.zeros(64)
    launcher((3, 1), (x, y), (64, 1))
    assert len(compiles) == 1 and compiles[0][2] == dict(BLOCK=64, num_warps=4)
    launcher((5, 2), (x, y), (64, 1))
    assert len(compiles) == 1, "same specialization: launched directly"
    compiled = launcher._compiled[next(iter(launcher._compiled))]
    # with no launch hook installed: tensors by their addresses, no metadata, no hooks
    assert compiled.launches == [((5, 2, 1), 100, (x.data_ptr(), y.data_ptr(), 64, 1, 64))]
    assert compiled.hooks == (None, None, None)
    for tensors, ints in [((x, y), (48, 1)),  # another integer
                          ((x, y), (64, 16)),
                          ((x[1:], y), (64, 1)),  # 4 bytes in: not 16-byte aligned
                          ((x.double(), y), (64, 1))]:  # another dtype
        before = len(compiles)
        launcher((1, 1), tensors, ints)
        assert len(compiles) == before + 1, f"{[t.dtype for t in tensors]} {ints}: reused a kernel of another specialization"
        launcher((1, 1), tensors, ints)
        assert len(compiles) == before + 1, f"{ints}: its own specialization launched directly"
    driver.device = 1
    launcher((1, 1), (x, y), (64, 1))
    assert len(compiles) == 6, "another device: compiled for it"
    token = object()  # a plan standing for its integers and dtypes: the alignment still counts
    for tensors, n in [((x, y), 7), ((x, y), 7), ((x[4:], y), 7), ((x[1:], y), 8), ((x[1:], y), 8)]:
        launcher((1, 1), tensors, (64, 1), token)
        assert len(compiles) == n, f"with a layout token: {n - 6} compiles expected, got {len(compiles) - 6}"


def test_direct_launch_passes_tma_descriptors_as_they_are(fake_triton):
    """A launcher of TMA descriptors passes each descriptor itself (Triton's launcher unpacks it) and each
    plain tensor by its address; its key reads the descriptor's base, so a new base address on the same
    alignment launches directly and one off 16 bytes does not."""
    from triton.tools.tensor_descriptor import TensorDescriptor

    kernel, compiles, _ = fake_triton
    launcher = host.Launcher(kernel, dict(BLOCK=64), descriptors=True)
    x, y = torch.zeros(64, 64), torch.zeros(64)
    first = TensorDescriptor(x, [64, 64], [64, 1], [16, 16])
    launcher((1,), (first, y), (64, 1))
    again = TensorDescriptor(x.clone(), [64, 64], [64, 1], [16, 16])
    launcher((2,), (again, y), (64, 1))
    compiled = launcher._compiled[next(iter(launcher._compiled))]
    assert len(compiles) == 1 and compiled.launches[-1][2][:2] == (again, y.data_ptr())
    launcher((3,), (first, y[1:]), (64, 1))  # y 4 bytes in
    assert len(compiles) == 2, "a tensor off 16 bytes beside a descriptor reused an aligned specialization"


def test_a_launch_hook_sees_what_triton_gives_it(fake_triton):
    """With a launch hook installed (a profiler's, say) a direct launch passes the tensors themselves, the
    launch metadata and the hooks, as ``kernel[grid]`` does; removed again, the launch is the bare one."""
    from triton import knobs

    kernel, compiles, _ = fake_triton
    launcher = host.Launcher(kernel, dict(BLOCK=64))
    x = torch.zeros(64)
    launcher((1,), (x, x), (64, 1))
    compiled = launcher._compiled[next(iter(launcher._compiled))]
    seen = []
    knobs.runtime.launch_enter_hook.add(seen.append)
    try:
        launcher((2,), (x, x), (64, 1))
        metadata, enter, exit_ = compiled.hooks
        assert metadata == ("metadata", (2,), 100) and enter is knobs.runtime.launch_enter_hook
        assert exit_ is knobs.runtime.launch_exit_hook and compiled.launches[-1][2][:2] == (x, x)
    finally:
        knobs.runtime.launch_enter_hook.remove(seen.append)
    launcher((3,), (x, x), (64, 1))
    assert compiled.hooks == (None, None, None) and compiled.launches[-1][2][:2] == (x.data_ptr(), x.data_ptr())
    assert len(compiles) == 1


def test_no_direct_launch_with_pre_run_hooks_or_in_the_interpreter(fake_triton, monkeypatch):
    """A kernel with pre-run hooks goes through ``kernel[grid]`` on every launch (the hooks run there);
    in the interpreter no launcher is direct."""
    kernel, compiles, _ = fake_triton
    launcher = host.Launcher(kernel, dict(BLOCK=64))
    kernel.pre_run_hooks.append(lambda *a, **k: None)
    x = torch.zeros(64)
    for _ in range(3):
        launcher((1,), (x, x), (64, 1))
    assert len(compiles) == 3 and launcher.specializations() == 0
    monkeypatch.setattr(host._platform, "interpreting", lambda: True)
    assert not host.Launcher(kernel, dict(BLOCK=64)).direct


@pytest.mark.gpu
def test_direct_launches_match_triton_launches():
    """On the GPU the public functions' later calls launch directly and give the first call's bits;
    CUDA graph capture of a call replays the same bits."""
    case = ProducerCase(m=7, n_groups=2, heads_per_group=2, head_dim=256, rope_dim=64)
    o, pos, cache = make_inputs(case, "cuda")
    first = kernels.inv_rope_fp8_quant(*case.args(o, pos, cache))
    again = kernels.inv_rope_fp8_quant(*case.args(o, pos, cache))
    w_fp8, w_scale = kernels.quantize_weight_fp8(torch.randn(2, 256, 512, device="cuda") * 0.05)
    out1 = kernels.fp8_block_bmm(*first, w_fp8, w_scale)
    out2 = kernels.fp8_block_bmm(*again, w_fp8, w_scale)
    torch.cuda.synchronize()
    assert torch.equal(first[0].view(torch.uint8), again[0].view(torch.uint8)) and torch.equal(first[1], again[1])
    assert torch.equal(out1, out2)
    tma = _consumer_inputs("cuda", g=4, m=tma_m("cuda"), n=256, k=128)  # a grid the dispatch reads with TMA
    with provenance.capture() as ran:
        tma_out = [kernels.fp8_block_bmm(*tma) for _ in range(2)]  # the second launches directly
    assert [r.detail("loads") for r in ran] == ["tma", "tma"], ran
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = kernels.inv_rope_fp8_quant(*case.args(o, pos, cache))
        captured_out = kernels.fp8_block_bmm(*first, w_fp8, w_scale)
        captured_tma = kernels.fp8_block_bmm(*tma)
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(first[0].view(torch.uint8), captured[0].view(torch.uint8)) and torch.equal(first[1], captured[1])
    assert torch.equal(out1, captured_out), "a captured consumer call replayed other bits"
    assert torch.equal(tma_out[0], tma_out[1]), "a direct launch of the TMA kernel gave other bits"
    assert torch.equal(tma_out[0], captured_tma), "a captured TMA consumer call (descriptors as kernel parameters) replayed other bits"


def test_consumer_launches_give_the_public_calls_bits(device):
    """``consumer_launches`` (what scripts/host_path.py times) launches what the public call launches:
    split K with its sum, and the TMA kernel with descriptors over the given buffers."""
    for g, m, n, k, desc in ((2, 40, 128, 512, False), (4, tma_m(device), 256, 128, True)):
        a, a_scale, b, b_scale = _consumer_inputs(device, g=g, m=m, n=n, k=k)
        out = torch.empty(g, m, n, dtype=torch.bfloat16, device=device)
        launches = consumer_launches(a, a_scale, b, b_scale, out)
        assert (type(launches[0][2][0]).__name__ == "TensorDescriptor") == desc, (g, m, launches[0][2][0])
        for launcher, grid, tensors, ints in launches:
            launcher(grid, tensors, ints)
        assert torch.equal(out, kernels.fp8_block_bmm(a, a_scale, b, b_scale)), (g, m)


def test_tma_descriptors_are_built_once_per_layout_and_rebased_per_call(device, monkeypatch):
    """A TMA consumer launch builds its descriptors (whose construction re-checks every field: host time
    per call) once per layout and ``b`` row stride, then rebases them on each call's tensors: later
    calls of the layout on other buffers build none and get their own buffers' bits, a weight with
    padded rows gets descriptors of its own stride, and what is kept holds no call's tensor."""
    built = []

    def counting(init):
        def post_init(self):
            if Path(sys._getframe(2).f_code.co_filename).resolve().parent == KERNELS_DIR:  # not the interpreter's copies
                built.append(type(self).__name__)  # not the descriptor: it holds its tensor
            init(self)
        return post_init

    for cls in host._DESCRIPTORS:
        monkeypatch.setattr(cls, "__post_init__", counting(cls.__post_init__))
    g, n, k = 4, 256, 128
    m = tma_m(device, g, n, k)
    x, y = (_consumer_inputs(device, g=g, m=m, n=n, k=k) for _ in range(2))  # one layout, other buffers
    a, a_scale, b, b_scale = x
    rows = torch.zeros(g, n, k + 128, dtype=torch.uint8, device=device).view(FP8_DTYPE)[:, :, :k]
    padded = (a, a_scale, rows.copy_(b), b_scale)  # x's weight with its rows 128 bytes apart more: another stride
    got_x = kernels.fp8_block_bmm(*x)
    first = len(built)
    assert first in (0, 2), built  # two, or none where an earlier call of this layout built them
    with provenance.capture() as ran:
        got_y, again_x = kernels.fp8_block_bmm(*y), kernels.fp8_block_bmm(*x)
    assert len(built) == first, f"calls of a layout seen before built {len(built) - first} descriptors"
    assert [r.detail("loads") for r in ran] == ["tma"] * 2, ran
    got_padded = kernels.fp8_block_bmm(*padded)
    assert len(built) - first in (0, 2)
    want_x, want_y = (kernels.launch_consumer(*args, torch.empty_like(got_x), kernels.ConsumerConfig(64, 128, 4, 3))
                      for args in (x, y))
    for what, out, want in (("x", got_x, want_x), ("y", got_y, want_y), ("x again", again_x, want_x),
                            ("x, padded weight rows", got_padded, want_x)):
        assert torch.equal(out.view(torch.int16), want.view(torch.int16)), what
    z = _consumer_inputs(device, g=g, m=m + 64, n=n, k=k)  # a layout of its own: this call builds the templates
    alive = [weakref.ref(z[0]), weakref.ref(z[2])]
    kernels.fp8_block_bmm(*z)
    del z
    gc.collect()
    assert [ref() is None for ref in alive] == [True, True], "descriptors kept by the consumer hold a call's a or b"


def test_rebased_descriptor_keeps_every_field_but_its_base(monkeypatch):
    """``host.rebased`` gives a descriptor (Triton's, and Gluon's with its shared-memory layout) of the
    template's fields over the new base, without building one, and leaves the template as it was."""
    import importlib

    x, y = torch.zeros(64, 128, dtype=torch.uint8).view(FP8_DTYPE), torch.zeros(64, 128, dtype=torch.uint8).view(FP8_DTYPE)
    templates = [host._TensorDescriptor(x, [64, 128], [128, 1], [16, 128])]
    wgmma = importlib.import_module("accval.kernels.fp8_block_bmm_wgmma")
    if wgmma.AVAILABLE:
        templates.append(wgmma.descriptors(x, x.view(1, 64, 128), 64, 64, 128, 64, 64)[0])
    for template in templates:
        fields = dict(vars(template))
        built = []
        monkeypatch.setattr(type(template), "__post_init__", lambda self: built.append(self))
        moved = host.rebased(template, y)
        assert type(moved) is type(template) and moved.base is y and built == []
        assert vars(template) == fields and {**fields, "base": y} == vars(moved), type(template)


def _fresh_partials_result(a, a_scale, b, b_scale):
    """The consumer's bits through ``consumer_launches``, whose split-K partials are its own allocation."""
    out = torch.empty(a.shape[0], a.shape[1], b.shape[1], dtype=torch.bfloat16, device=a.device)
    for launcher, grid, tensors, ints in consumer_launches(a, a_scale, b, b_scale, out):
        launcher(grid, tensors, ints)
    return out


def test_split_k_partials_are_reused_per_stream_and_thread(device):
    """Eager split-K calls take their partials from one buffer per (device, stream, thread): a smaller
    problem after a larger one reuses it, a larger one replaces it, another thread gets its own, and
    every result has the bits of a launch with freshly allocated partials."""
    import threading

    from accval.kernels.fp8_block_bmm import _PARTIALS

    big = _consumer_inputs(device, g=2, m=40, n=128, k=512)
    small = _consumer_inputs(device, g=1, m=8, n=128, k=512)
    bigger = _consumer_inputs(device, g=2, m=40, n=128, k=1024)
    _PARTIALS.clear()
    with provenance.capture() as ran:
        got_big = kernels.fp8_block_bmm(*big)
        got_small = kernels.fp8_block_bmm(*small)
        got_bigger = kernels.fp8_block_bmm(*bigger)
    # on an H200 (132 SMs) as on the interpreter's 8: every case splits K, or this checks nothing
    assert all(r.detail("split_k") > 1 for r in ran), ran
    _PARTIALS.clear()
    got_big = kernels.fp8_block_bmm(*big)
    first = _PARTIALS.nbytes()
    got_small = kernels.fp8_block_bmm(*small)
    assert _PARTIALS.nbytes() == first, "a smaller problem must reuse the buffer"
    got_bigger = kernels.fp8_block_bmm(*bigger)
    assert _PARTIALS.nbytes() > first, "a larger problem must replace the buffer with one that holds it"
    in_thread = {}
    worker = threading.Thread(target=lambda: in_thread.update(out=kernels.fp8_block_bmm(*big)))
    worker.start()
    worker.join()
    buffers = list(_PARTIALS._buffers.values())
    assert len(buffers) == 2 and buffers[0].data_ptr() != buffers[1].data_ptr(), "another thread shares the buffer"
    for inputs, got in ((big, got_big), (small, got_small), (bigger, got_bigger), (big, in_thread["out"])):
        assert torch.equal(got, _fresh_partials_result(*inputs))


def test_the_custom_op_allocates_its_own_partials(device):
    """Only the public function's eager calls reuse the partials buffer: the custom op (what torch.compile,
    dispatch modes and opcheck run) allocates per call, since under torch.compile's CUDA graphs its
    warm-up allocations come from the graph's private pool, which a kept buffer must not hold."""
    from accval.kernels.fp8_block_bmm import _PARTIALS

    inputs = _consumer_inputs(device, g=2, m=40, n=128, k=512)
    _PARTIALS.clear()
    with provenance.capture() as ran:
        got = torch.ops.accval.fp8_block_bmm(*inputs, "triton", True)
        with FlopCounterMode(display=False):  # a dispatch mode: the public function goes through the op
            counted = kernels.fp8_block_bmm(*inputs)
    assert ran[0].detail("split_k") > 1, ran
    assert _PARTIALS.nbytes() == 0, "the op path kept a partials buffer"
    eager = kernels.fp8_block_bmm(*inputs)
    assert _PARTIALS.nbytes() > 0, "the eager path no longer reuses its buffer: this test checks nothing"
    assert torch.equal(got, eager) and torch.equal(counted, eager)


@pytest.mark.gpu
def test_graph_capture_takes_fresh_partials():
    """While a stream is captured, a split-K call's partials are a fresh allocation (the graph's own
    memory), never the eager buffer of the capture stream: a replay on another stream would race with
    eager calls on that one. The replay gives the eager call's bits."""
    from accval.kernels.fp8_block_bmm import _PARTIALS

    inputs = _consumer_inputs("cuda", g=2, m=40, n=128, k=512)
    eager = kernels.fp8_block_bmm(*inputs)
    _PARTIALS.clear()
    side = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        captured = kernels.fp8_block_bmm(*inputs)
    assert _PARTIALS.nbytes() == 0, "the capture took the eager partials buffer"
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(eager, captured)
    # "cuda" without an index is the current device's buffer
    current = torch.device("cuda", torch.cuda.current_device())
    assert _PARTIALS(torch.device("cuda"), 16, torch.float32) is _PARTIALS(current, 16, torch.float32)
