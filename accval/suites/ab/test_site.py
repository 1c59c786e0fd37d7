"""The o_a_proj site: faithful to the model's own forward, DEP/TEP emulation, and defects made visible."""

from __future__ import annotations

import copy
import importlib

import pytest
import torch

pytest.importorskip("transformers.models.deepseek_v4")

from accval import stats  # noqa: E402
from accval.model import builtin  # noqa: E402
from accval.site import Arm, OAProjSite  # noqa: E402

A = Arm("A", "bf16-fallback")
B = Arm("B", "fp8-chain", "torch")


@pytest.fixture(scope="module")
def loaded():
    return builtin.build_builtin(seed=0)


@pytest.fixture(scope="module")
def ids(loaded):
    text = "Question: Janet has 3 apples and buys 17 more. How many does she have?\nAnswer: 3 + 17 = <<3+17=20>>20\n#### 20\n\n"
    enc = loaded.tokenizer.encode(text * 30)[:1030]  # M = 1030 >= 1024 and not a multiple of 4 or 8
    return torch.tensor([enc])


def _site(loaded, mode, matmul="fp32"):
    """The site on a copy of the model; fp32 matmuls (what a CPU run uses) unless the test compares
    with the model's own bf16 arithmetic."""
    model = copy.deepcopy(loaded.model)
    return model, OAProjSite(model, mode, matmul=matmul)


@torch.no_grad()
def test_native_and_bf16_fallback_reproduce_the_model_bit_for_bit(loaded, ids):
    """Arm 'native' (the model's own code, through accval's forward) and arm A (kernels' bf16
    fallback) both give the unpatched model's logits exactly, once its o_a_proj weight is the
    dequantized FP8 weight: the forward replacement is faithful to the installed modeling file."""
    model, site = _site(loaded, "single", matmul="model")
    ref = copy.deepcopy(loaded.model)
    for mine, theirs in zip(model.modules(), ref.modules()):
        if hasattr(mine, "o_a_proj") and hasattr(mine, "o_b_proj"):
            theirs.o_a_proj.weight.copy_(mine.o_a_proj.weight)
    expected = ref(ids).logits
    site.set_arm(Arm("N", "native"))
    assert torch.equal(model(ids).logits, expected)
    site.set_arm(A)
    assert torch.equal(model(ids).logits, expected)


@torch.no_grad()
def test_dep8_is_exact_and_tep8_only_reorders_the_o_b_proj_sum(loaded, ids):
    batch = torch.cat([ids, ids.roll(7, dims=1)])  # two requests: DEP puts them on different ranks
    outs = {}
    for mode in ("single", "dep8", "tep8"):
        model, site = _site(loaded, mode)
        site.set_arm(A)
        outs[mode] = model(batch).logits.float()
        ms = sorted(site.stats["A"].m_counts)
        if mode == "dep8":
            assert ms == [1030], ms  # each rank its own request's tokens
        if mode == "tep8":
            assert ms == [2060] and site.stats["A"].calls == 2 * 8, (ms, site.stats["A"].calls)  # all tokens, 8 ranks
    assert torch.equal(outs["dep8"], outs["single"]), "DEP changes nothing per token"
    diff = (outs["tep8"] - outs["single"]).abs().max().item()
    assert 0 < diff < 0.5, f"TEP's bf16 all-reduce should only reorder rounding, max logit diff {diff}"


@torch.no_grad()
def test_padding_tokens_are_not_part_of_m(loaded, ids):
    model, site = _site(loaded, "dep8")
    site.set_arm(A)
    batch = torch.cat([ids[:, :1030], torch.cat([torch.full((1, 30), 2), ids[:, :1000]], dim=1)])
    site.track_padding([0, 30])
    try:
        model(batch, attention_mask=(batch != -1).long())
    finally:
        site.track_padding(None)
    assert sorted(site.stats["A"].m_counts) == [1000, 1030]


@torch.no_grad()
def test_clean_chain_agrees_and_scale_pad_btm_is_caught(loaded, ids):
    """At M=1025 the CPU dispatch (the B200 table) has BTM=8, so scale-pad-btm pads the scale buffer to
    1032 rows where the consumer assumes pad4(1025) = 1028: every layer's call breaks the contract and
    the logits move. The clean chain stays under the KL ceiling."""
    x = ids[:, :1025]
    model, site = _site(loaded, "dep8")
    site.set_arm(A)
    la = model(x).logits[0].float()
    site.set_arm(B)
    lb = model(x).logits[0].float()
    _, agree, kl = stats.token_agreement(la, lb)
    assert kl / la.shape[0] < stats.KL_CEILING and site.stats["B"].contract_violations == 0
    site.set_arm(Arm("M", "fp8-chain", "torch", inject="scale-pad-btm"))
    lm = model(x).logits[0].float()
    st = site.stats["M"]
    assert st.contract_violations == 2 and "scale" in st.first_violation, st.to_json()
    _, agree_m, kl_m = stats.token_agreement(la, lm)
    assert kl_m > 3 * kl, f"the defect did not move the logits: KL {kl_m} vs clean {kl}"


@torch.no_grad()
def test_scale_pad_btm_is_injected_under_hoppers_dispatch_too(loaded, ids, monkeypatch):
    """Hopper's producer runs one token per program at every M, where ``pad_up(M, max(BTM, 4))`` is
    pad4(M): a mutant taking BTM from this device's table injected nothing there (an H200 A/B of it read
    "no regression"). It takes the pull request's token blocks, so the defect is the same everywhere."""
    producer_module = importlib.import_module("accval.kernels.inv_rope_fp8_quant")  # the package's attribute of
    # that name is the function
    monkeypatch.setattr(producer_module, "_arch_key", lambda device: "sm90")
    assert producer_module.config_for(1025, torch.device("cpu")).block_tokens_m == 1
    model, site = _site(loaded, "dep8")
    site.set_arm(Arm("M", "fp8-chain", "torch", inject="scale-pad-btm"))
    model(ids[:, :1025])
    st = site.stats["M"]
    assert st.contract_violations == 2 and "1032" in st.first_violation, st.to_json()


@torch.no_grad()
def test_plugged_implementations_run_through_the_chain_function(loaded, ids):
    """Arm B with a plugged producer and consumer (packed UE8M0 scales, the math-reference consumer)
    runs kernels.o_a_proj_fp8_chain with them: the site records what ran, no contract violation, and the
    logits stay within the FP8 chain's agreement with arm A; a plugged producer whose scales the
    consumer reads wrongly (the packed-byte-order mutant) shows."""
    x = ids[:, :300]
    model, site = _site(loaded, "dep8")
    site.set_arm(A)
    la = model(x).logits[0].float()
    site.set_arm(Arm("P", "fp8-chain", "torch", producer="reference:ue8m0-packed", consumer="reference"))
    lp = model(x).logits[0].float()
    st = site.stats["P"]
    assert set(st.ran) == {"producer:torch-reference", "consumer:math-reference", "o_a_proj:fp8-chain"}, st.to_json()
    assert st.contract_violations == 0 and not st.provenance_problems, st.to_json()
    _, agree, kl = stats.token_agreement(la, lp)
    assert kl / la.shape[0] < stats.KL_CEILING, f"KL {kl / la.shape[0]}"
    site.set_arm(Arm("W", "fp8-chain", "torch", producer="reference:ue8m0-packed", consumer="mutant:packed-byte-order"))
    lw = model(x).logits[0].float()
    _, _, kl_w = stats.token_agreement(la, lw)
    assert kl_w > 3 * kl, f"swapped scale bytes did not move the logits: KL {kl_w} vs {kl}"


@torch.no_grad()
def test_a_plugged_producer_breaking_the_contract_is_counted_and_ends_the_run(loaded, ids):
    """``--producer`` whose scale buffer is padded to the pull request's token block: at M = 1025 its
    buffers are not the contract's. The site counts the violation and raises the ContractViolation (the
    CLI's regression exit), where the wrapper's own check used to surface as an error (exit 2)."""
    from accval.implementations import ContractViolation

    model, site = _site(loaded, "dep8")
    site.set_arm(Arm("P", "fp8-chain", "torch", producer="accval.examples.torch_producer:broken_pad"))
    model(ids[:, :1024])  # a multiple of its token block: nothing to see
    assert site.stats["P"].contract_violations == 0
    with pytest.raises(ContractViolation, match=r"^at the model's o_a_proj \(M=1025\): .*broken_pad.*scale"):
        model(ids[:, :1025])
    assert site.stats["P"].contract_violations == 1 and "M=1025" in site.stats["P"].first_violation


def neox_only(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim, quant_group_size=128,
              is_neox=True):
    """A producer declaring the NEOX layout only (the model's o_a_proj is GPT-J)."""
    from accval.examples.torch_producer import inv_rope_fp8_quant

    return inv_rope_fp8_quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
                              quant_group_size, is_neox)


neox_only.accval_recipe = "fp32-div"
neox_only.accval_rope_layouts = ("neox",)


def test_a_plugged_producer_must_declare_what_the_model_calls_it_with(loaded):
    _, site = _site(loaded, "dep8")
    with pytest.raises(ValueError, match=r"^--producer: the model's o_a_proj calls it with GPT-J RoPE, bfloat16 o, "
                                         r"head_dim \d+, rope_dim \d+; producer .*neox_only.* declares "
                                         r"accval_rope_layouts=\('neox',\), not gptj"):
        site.set_arm(Arm("N", "fp8-chain", "torch", producer=f"{__name__}:neox_only"))


@torch.no_grad()
def test_silent_fallback_is_a_provenance_problem(loaded, ids):
    model, site = _site(loaded, "dep8")
    site.set_arm(Arm("S", "fp8-chain", "torch", inject="silent-fallback"))
    model(ids[:, :40])
    assert site.stats["S"].provenance_problems == ["arm S asked for consumer 'torch', ran 'emulated'"]


def test_bad_arms_and_modes_are_value_errors(loaded):
    with pytest.raises(ValueError, match="path expected one of"):
        Arm("A", "fp16")
    with pytest.raises(ValueError, match="backend expected one of"):
        Arm("B", "fp8-chain", "cutlass")
    with pytest.raises(ValueError, match="apply to the FP8 chain"):
        Arm("A", "bf16-fallback", inject="rope-sign")
    with pytest.raises(ValueError, match="apply to the FP8 chain"):
        Arm("A", "bf16-fallback", producer="reference")
    with pytest.raises(ValueError, match="unknown producer 'nope'"):
        Arm("B", "fp8-chain", "torch", producer="nope").implementations()
    with pytest.raises(ValueError, match="reads ue8m0-packed scales; the producer \\(accval\\) writes fp32-div; add --producer "
                       "reference:ue8m0-packed"):
        Arm("B", "fp8-chain", "torch", consumer="mutant:packed-byte-order").implementations()
    with pytest.raises(ValueError, match="add --consumer reference"):
        Arm("B", "fp8-chain", "torch", producer="reference:ue8m0-packed").implementations()
    with pytest.raises(ValueError, match="mode: expected one of"):
        OAProjSite(copy.deepcopy(loaded.model), "dep3")
    with pytest.raises(ValueError, match="only in the GPU kernels"):
        from accval import mutants
        mutants.for_chain("int32-index", "torch")


def test_checkpoint_head_layout_is_checked():
    cfg = builtin.builtin_config()
    builtin.check_head_layout(cfg)
    cfg.head_dim = 192  # nope 128 + rope 64: 128 % 128 != 128 - 64
    with pytest.raises(ValueError, match="head layout the FP8 chain cannot take"):
        builtin.check_head_layout(cfg)


def _masks(b: int, s: int) -> dict[str, torch.Tensor]:
    """Additive bf16 masks as transformers builds them: causal; a sliding window of 100 with the rows
    left-padded by 0 and 37 tokens (padding rows see no key); the window plus 8 always-visible columns
    appended at the end (a compressor's entries)."""
    i = torch.arange(s)
    causal = i[None, :] <= i[:, None]
    window = causal & (i[:, None] - i[None, :] < 100)
    padded = window[None] & (i[None, None, :] >= torch.tensor([0, 37])[:b, None, None])
    appended = torch.cat([padded, torch.ones(b, s, 8, dtype=torch.bool)], dim=-1)

    def additive(allowed):
        allowed = allowed.expand(b, *allowed.shape[-2:])[:, None]
        return torch.zeros(allowed.shape, dtype=torch.bfloat16).masked_fill(~allowed, torch.finfo(torch.bfloat16).min)

    return {"causal": additive(causal), "window-padded": additive(padded), "window-appended": additive(appended)}


@torch.no_grad()
@pytest.mark.parametrize("kind", ["causal", "window-padded", "window-appended"])
@pytest.mark.parametrize("s", [48, 300])
def test_fp32_matmul_attention_is_eager_up_to_summation_order(s, kind):
    """The CPU attention (eager's arithmetic, matmuls in fp32 of the same bf16 values; prompts longer
    than QUERY_CHUNK in chunks of query rows against the key columns their mask allows) against
    transformers' eager function with shared KV, sinks and a causal / sliding-window / padded mask:
    within one bf16 ulp of each row's scale and 99.9% bit-equal."""
    from transformers.models.deepseek_v4 import modeling_deepseek_v4 as hf

    from accval.site import QUERY_CHUNK, fp32_matmul_eager_attention

    gen = torch.Generator().manual_seed(0)
    b, h, d = 2, 4, 64
    mask = _masks(b, s)[kind]
    sk = mask.shape[-1]
    q = torch.randn(b, h, s, d, generator=gen).to(torch.bfloat16)
    kv = torch.randn(b, 1, sk, d, generator=gen).to(torch.bfloat16)
    module = type("M", (), {"num_key_value_groups": h, "sinks": torch.randn(h, generator=gen).to(torch.bfloat16),
                            "training": False})()
    want, want_w = hf.eager_attention_forward(module, q, kv, kv, mask, scaling=d**-0.5)
    got, got_w = fp32_matmul_eager_attention(module, q, kv, kv, mask, scaling=d**-0.5)
    assert got.shape == want.shape and got.dtype == want.dtype
    if s <= QUERY_CHUNK:
        assert got_w.shape == want_w.shape and ((got_w.float() - want_w.float()).abs() <= 2.0**-8).all()
    else:
        assert got_w is None, "a chunked call returns no attention weights"
    # a score a rounding apart moves its whole softmax row a little: bound by one ulp of the row's largest output
    ulp = want.float().abs().amax(-1, keepdim=True) * 2.0**-7
    assert ((got.float() - want.float()).abs() <= ulp).all(), "more than one bf16 ulp (of the row's scale) from eager"
    assert (got == want).float().mean() >= 0.999, f"only {(got == want).float().mean():.4f} bit-equal to eager"
    if kind == "window-padded":
        assert (got[1, :37] == 0).all(), "a padding row (no key allowed) must give eager's zeros"


@torch.no_grad()
def test_fp32_matmul_linear_is_bf16_linear_up_to_summation_order():
    """A bf16 ``nn.Linear`` as an fp32 matmul of the same bf16 values, rounded once: within one bf16
    ulp of each output and mostly bit-equal to the bf16 layer; its fp32 weight follows weight changes."""
    from accval.site import fp32_matmul_linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(512, 384, bias=True).to(torch.bfloat16)
    x = torch.randn(3, 70, 512, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    want = lin(x)
    got = fp32_matmul_linear(lin, x)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    # two fp32 sums of the same terms in different orders, each rounded once to bf16: one ulp of the
    # larger result apart, plus the fp32 summation error (K terms, relative 2^-24 of their magnitudes)
    mag = x.float().abs() @ lin.weight.float().abs().T + lin.bias.float().abs()
    bound = torch.maximum(got.float().abs(), want.float().abs()) * 2.0**-7 + 512 * 2.0**-24 * mag
    assert ((got.float() - want.float()).abs() <= bound).all(), "more than one bf16 ulp from the bf16 layer"
    assert (got == want).float().mean() >= 0.99, f"only {(got == want).float().mean():.4f} bit-equal"
    lin.weight.mul_(2)  # the cached fp32 copy must not go stale
    assert torch.equal(fp32_matmul_linear(lin, x), torch.nn.functional.linear(x.float(), lin.weight.float(),
                                                                              lin.bias.float()).to(torch.bfloat16))


@torch.no_grad()
def test_fp32_matmul_model_follows_the_model():
    """Through the whole sentinel (trained, so its choices are clear), ``matmul="fp32"`` (attention and
    every linear layer) predicts the same next token as the model's own bf16 arithmetic at >= 99% of
    the positions of six gsm8k-format problems; every linear layer runs it."""
    from accval.sentinel import problems
    from accval.site import fp32_matmul_linear

    sentinel = builtin.load("sentinel")
    text = "".join(f"Question: {p.question}\nAnswer: {p.answer}\n\n" for p in (problems.make("test", 0, i) for i in range(6)))
    ids = torch.tensor([sentinel.tokenizer.encode(text)])
    ref_model, fast_model = copy.deepcopy(sentinel.model), copy.deepcopy(sentinel.model)
    OAProjSite(ref_model, "dep8").set_arm(A)
    OAProjSite(fast_model, "dep8", matmul="fp32").set_arm(A)
    linears = [m for m in fast_model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.forward.__func__ is fp32_matmul_linear for m in linears)
    assert not any(getattr(m.forward, "__func__", None) is fp32_matmul_linear for m in ref_model.modules())
    same = fast_model(ids).logits.argmax(-1) == ref_model(ids).logits.argmax(-1)
    assert same.float().mean() >= 0.99, f"argmax equal at only {same.float().mean():.4f} of {same.numel()} positions"
    experts = [m for m in fast_model.modules() if type(m).__name__ == "DeepseekV4Experts"]
    assert experts and all(m.forward.accval_fp32_matmuls for m in experts), "an experts module ran bf16 matmuls"


@torch.no_grad()
def test_fp32_matmuls_mode_rounds_like_bf16_and_keeps_only_weights():
    """Under :class:`Fp32Matmuls` a bf16 grouped matmul (the experts' path) is the fp32 one rounded to
    bf16, within one bf16 ulp of the bf16 kernel; fp32 copies are kept for parameters only."""
    import torch.nn.functional as F

    from accval.site import Fp32Matmuls

    if not hasattr(F, "grouped_mm"):
        pytest.skip("this torch has no F.grouped_mm")
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter((torch.randn(3, 256, 192, generator=gen) * 0.1).to(torch.bfloat16), requires_grad=False)
    x = torch.randn(40, 256, generator=gen).to(torch.bfloat16)
    offs = torch.tensor([10, 25, 40], dtype=torch.int32)
    want = F.grouped_mm(x, w, offs=offs)
    cache: dict = {}
    with Fp32Matmuls(cache):
        got = F.grouped_mm(x, w, offs=offs)
        lin = F.linear(x, w[0].T)  # a view of a parameter, as the eager experts pass it
        act = F.linear(x, x[:5])  # two activations: nothing kept
    assert got.dtype == torch.bfloat16 and torch.equal(got, F.grouped_mm(x.float(), w.float(), offs=offs).to(torch.bfloat16))
    mag = torch.cat([x[a:b].float().abs() @ w[i].float().abs() for i, (a, b) in enumerate(zip([0, 10, 25], [10, 25, 40]))])
    bound = torch.maximum(got.float().abs(), want.float().abs()) * 2.0**-7 + 256 * 2.0**-24 * mag
    assert ((got.float() - want.float()).abs() <= bound).all()
    assert torch.equal(lin, F.linear(x.float(), w[0].T.float()).to(torch.bfloat16)) and act.dtype == torch.bfloat16
    assert len(cache) == 2, f"expected the two weight operands kept, got {len(cache)}"


def test_site_rejects_an_unknown_matmul(loaded):
    with pytest.raises(ValueError, match="matmul: expected one of"):
        OAProjSite(copy.deepcopy(loaded.model), "dep8", matmul="flash")
