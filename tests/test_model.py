"""Properties of model.py: shapes and causality for every architecture option, the two attention paths agree,
initialisation, the speed-run switches, parameter counts, config and checkpoint loading."""
import itertools
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from model import ACTS, GPT, NORM_POS, NORMS, POS, GPTConfig, apply_rope, rope_tables, sinusoid_table  # noqa: E402

torch.set_num_threads(1)


def tiny(**kw):
    """A small config: 2 layers, 4 heads of 8 dims, vocab 50 (padded to 64), block 16."""
    base = dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32)
    return GPTConfig(**{**base, **kw})


def build(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(tiny(**kw)).eval()


options = st.fixed_dictionaries({
    'pos': st.sampled_from(POS), 'norm': st.sampled_from(NORMS), 'norm_pos': st.sampled_from(NORM_POS),
    'act': st.sampled_from(ACTS), 'n_kv_head': st.sampled_from([None, 4, 2, 1]), 'bias': st.booleans(),
    'tie_weights': st.booleans(), 'mlp_hidden': st.sampled_from([None, 48]), 'qk_norm': st.booleans(),
    'zero_init': st.booleans(), 'logit_softcap': st.sampled_from([0.0, 5.0]), 'x0_mix': st.booleans(),
})


@settings(max_examples=40, deadline=None, database=None, derandomize=True)  # same cases every run, nothing written
@given(opts=options, B=st.integers(1, 3), T=st.integers(1, 16), seed=st.integers(0, 2**16))
def test_output_shapes_for_every_option(opts, B, T, seed):
    """logits are (B, T, vocab) with targets and (B, 1, vocab) without, the loss is a finite scalar."""
    model = build(seed, **opts)
    idx = torch.randint(0, 50, (B, T))
    logits, loss = model(idx, idx)
    assert logits.shape == (B, T, 50) and loss.dim() == 0 and torch.isfinite(loss)
    last, none = model(idx)
    assert last.shape == (B, 1, 50) and none is None
    torch.testing.assert_close(last[:, 0], logits[:, -1], atol=1e-5, rtol=1e-5)


@settings(max_examples=30, deadline=None, database=None, derandomize=True)
@given(opts=options, t=st.integers(0, 15), seed=st.integers(0, 2**16))
def test_changing_token_t_never_changes_earlier_logits(opts, t, seed):
    """Causality: editing token t leaves logits at positions < t unchanged (and does change position t)."""
    model = build(seed, **opts)
    idx = torch.randint(0, 50, (2, 16))
    edited = idx.clone()
    edited[:, t] = (idx[:, t] + 1) % 50
    a, _ = model(idx, idx)
    b, _ = model(edited, edited)
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, t], b[:, t])


@pytest.mark.parametrize('pos,n_kv_head,norm_pos', [(p, kv, npos) for p in POS for kv in (None, 2, 1)
                                                    for npos in NORM_POS])
def test_sdpa_path_equals_manual_path(pos, n_kv_head, norm_pos):
    """The fused scaled_dot_product_attention path and the manual masked-softmax path agree (fp32, atol 1e-5)."""
    model = build(pos=pos, n_kv_head=n_kv_head, norm_pos=norm_pos)
    idx = torch.randint(0, 50, (3, 16))
    fused, _ = model(idx, idx)
    manual = model.logits(model.trunk(idx, torch.arange(16), maps=[]), padded=True)  # maps: the manual path
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=0)


@pytest.mark.parametrize('n_kv_head', [None, 1])
def test_attention_maps_are_causal_distributions(n_kv_head):
    """attention_maps: one (B, n_head, T, T) map per layer, upper triangle exactly 0, rows sum to 1."""
    model = build(n_kv_head=n_kv_head)
    maps = model.attention_maps(torch.randint(0, 50, (2, 12)))
    assert len(maps) == 2
    for att in maps:
        assert att.shape == (2, 4, 12, 12)
        assert (att.triu(diagonal=1) == 0).all()
        torch.testing.assert_close(att.sum(-1), torch.ones(2, 4, 12), atol=1e-6, rtol=0)


def test_gpt2_initialisation():
    """GPT-2 init: matrices and embeddings N(0, 0.02), the two residual projections per block N(0, 0.02/sqrt(2L)),
    biases 0, norm gains 1."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=8, n_embd=256, n_head=4, bias=True, norm='layernorm', pos='learned'))
    for name, p in model.named_parameters():
        if name.endswith(('attn.proj.weight', 'mlp.down.weight')):
            assert abs(p.std().item() - 0.02 / math.sqrt(16)) < 0.1 * 0.02 / math.sqrt(16), name
        elif p.dim() == 2:
            assert abs(p.std().item() - 0.02) < 0.002, name
        elif name.endswith('bias'):
            assert (p == 0).all(), name
        else:
            assert (p == 1).all(), name


def test_rope_scores_depend_only_on_distance():
    """RoPE: rotating q at position m and k at position n leaves q.k a function of m - n only, and keeps norms."""
    cos, sin = rope_tables(16, 64, 10000.0)
    q, k = torch.randn(1, 1, 1, 16).expand(1, 64, 1, 16), torch.randn(1, 1, 1, 16).expand(1, 64, 1, 16)
    rq, rk = apply_rope(q, cos, sin)[0, :, 0], apply_rope(k, cos, sin)[0, :, 0]  # (64 positions, 16)
    torch.testing.assert_close(rq.norm(dim=-1), q[0, :, 0].norm(dim=-1))
    scores = rq @ rk.T  # scores[m, n]
    for d in (0, 3, -5, 40):
        diag = scores.diagonal(offset=-d)  # entries with m - n = d
        torch.testing.assert_close(diag, diag[:1].expand_as(diag), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(scores.diagonal(0)[:1], scores.diagonal(-3)[:1])


def test_sinusoid_table_follows_vaswani():
    """PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(p / 10000^(2i/d))."""
    table = sinusoid_table(50, 32)
    for p, i in ((0, 0), (7, 3), (49, 15)):
        angle = p / 10000 ** (2 * i / 32)
        assert math.isclose(table[p, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
        assert math.isclose(table[p, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)


def test_label_smoothing_and_dropout_apply_in_training_only():
    """With label_smoothing the training loss is the smoothed cross-entropy while eval mode reports the plain one
    (targets of -1 are ignored); dropout makes training forwards random and leaves eval forwards deterministic."""
    model = build(label_smoothing=0.1)
    x = torch.randint(0, 50, (2, 16))
    logits, loss = model(x[:, :-1], x[:, 1:])
    flat = logits.reshape(-1, 50)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(flat, x[:, 1:].reshape(-1)))
    _, train_loss = model.train()(x[:, :-1], x[:, 1:])
    torch.testing.assert_close(train_loss, torch.nn.functional.cross_entropy(flat, x[:, 1:].reshape(-1), label_smoothing=0.1))
    masked = x[:, 1:].clone()
    masked[:, :10] = -1  # ignored targets (eval.py's strided windows score only their new tokens)
    _, part = model.eval()(x[:, :-1], masked)
    torch.testing.assert_close(part, torch.nn.functional.cross_entropy(logits[:, 10:].reshape(-1, 50), x[:, 11:].reshape(-1)))
    dropped = build(dropout=0.2).train()
    assert not torch.equal(dropped(x)[0], dropped(x)[0])
    dropped.eval()
    assert torch.equal(dropped(x)[0], dropped(x)[0])


@pytest.mark.parametrize('kw', [{}, dict(pos='learned', norm='layernorm', act='gelu', bias=True),
                                dict(pos='sinusoidal', norm_pos='post', act='relu'),
                                dict(n_layer=4, n_head=16, n_embd=512, tie_weights=False)])
def test_initial_loss_is_near_uniform(kw):
    """At initialisation the loss on random next tokens is within 5% of ln(vocab_size) (GPT-2 init)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{'n_layer': 2, **kw})).eval()
    x = torch.randint(0, 8192, (4, 65))
    _, loss = model(x[:, :-1], x[:, 1:])
    assert abs(loss.item() - math.log(8192)) < 0.05 * math.log(8192)


def test_tied_weights_share_storage():
    """tie_weights=True makes the token embedding and the output layer one tensor, even after training steps;
    tie_weights=False gives two."""
    model = build(tie_weights=True).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    for _ in range(2):
        idx = torch.randint(0, 50, (2, 16))
        model(idx, idx)[1].backward()
        opt.step()
        opt.zero_grad()
    assert model.wte.weight.data_ptr() == model.lm_head.weight.data_ptr()
    assert model.wte.weight is model.lm_head.weight
    untied = build(tie_weights=False)
    assert untied.wte.weight.data_ptr() != untied.lm_head.weight.data_ptr()


def test_config_round_trip_and_errors():
    """to_dict/from_dict round-trips every field; unknown or invalid fields (or no dict at all) are a one-line
    ValueError; a field a checkpoint lacks (one written before a switch existed) takes its default, which is off."""
    c = GPTConfig(n_kv_head=2, pos='sinusoidal', norm='layernorm', norm_pos='post', act='geglu',
                  mlp_hidden=100, dropout=0.1, bias=True, tie_weights=False, label_smoothing=0.1, rope_theta=500.0)
    d = c.to_dict()
    assert GPTConfig.from_dict(d) == c and all(type(v) in (int, float, bool, str) for v in d.values())
    assert GPTConfig.from_dict(GPTConfig().to_dict()) == GPTConfig()
    # a checkpoint written before the speed-run switches existed lacks them: it was trained with them off
    older = {k: v for k, v in d.items() if k not in ('qk_norm', 'zero_init', 'logit_softcap')}
    assert GPTConfig.from_dict(older) == c and GPTConfig.from_dict({**older, 'qk_norm': True}).qk_norm
    for bad in ({**d, 'n_experts': 4}, {**d, 'pos': 'alibi'},
                {**d, 'n_embd': 100, 'n_head': 6}, {**d, 'n_kv_head': 4}, {**d, 'n_layer': '4'},
                {**d, 'bias': 1}, {**d, 'dropout': 1.5}, None, [('n_layer', 2)]):
        with pytest.raises(ValueError, match='^model config') as e:
            GPTConfig.from_dict(bad)
        assert '\n' not in str(e.value)


def test_overfits_one_batch():
    """The model can memorise one small batch: loss < 0.1 within 300 AdamW steps."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=64)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    x = torch.randint(0, 64, (4, 33))
    for step in range(300):
        _, loss = model(x[:, :-1], x[:, 1:])
        if loss.item() < 0.1:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


@pytest.mark.parametrize('c', [1.0, 15.0])
def test_soft_capped_logits_stay_inside_the_cap(c):
    """logit_softcap=c: training and inference logits are c * tanh(raw / c), inside [-c, c] however large the raw
    logits grow (here 50x the cap), and the loss is the cross-entropy of the capped logits."""
    model = build(logit_softcap=c)
    with torch.no_grad():
        model.wte.weight.mul_(2000 * c)  # tied: the output matrix too
    idx = torch.randint(0, 50, (2, 16))
    logits, loss = model(idx, idx)
    last, _ = model(idx)  # the inference path, which generation takes
    model.config.logit_softcap = 0.0  # the same weights, uncapped
    raw, _ = model(idx, idx)
    assert raw.abs().max() > 50 * c and logits.abs().max() <= c
    torch.testing.assert_close(logits, c * torch.tanh(raw / c), atol=1e-4, rtol=1e-4)  # raw logits near 1e4: fp32
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits.reshape(-1, 50), idx.view(-1)))
    torch.testing.assert_close(last[:, 0], logits[:, -1])


@pytest.mark.parametrize('act', ['swiglu', 'relu2'])
def test_zero_init_blocks_are_the_identity_on_a_fresh_model(act):
    """zero_init: both residual projections of every block start at 0, so a fresh model's logits are those of its
    embeddings alone (final norm and head); gradients still reach the projections. Without it they differ."""
    idx = torch.randint(0, 50, (2, 16))
    for zero_init in (False, True):
        model = build(zero_init=zero_init, act=act, bias=True)
        logits, loss = model(idx, idx)
        alone = model.lm_head(model.norm_f(model.wte(idx)))[..., :50]
        assert torch.allclose(logits, alone, atol=1e-6) == zero_init
    loss.backward()
    assert all(b.attn.proj.weight.grad.abs().sum() > 0 and b.mlp.down.weight.grad.abs().sum() > 0 for b in model.blocks)


def test_x0_mix_starts_as_the_plain_model_and_learns_how_much_embedding_each_block_reads():
    """x0_mix: a fresh model's logits are those of the same weights without it (the stream's weights start at 1,
    the embedding's at 0); both weights get gradients, and moving them changes the logits."""
    idx = torch.randint(0, 50, (2, 16))
    plain, mixed = build(), build(x0_mix=True)
    logits, loss = mixed(idx, idx)
    torch.testing.assert_close(logits, plain(idx, idx)[0], atol=0, rtol=0)
    loss.backward()
    assert mixed.x0_lambdas.grad.abs().min() > 0 and mixed.resid_lambdas.grad.abs().min() > 0
    with torch.no_grad():
        mixed.x0_lambdas.fill_(0.5)
    assert not torch.allclose(mixed(idx, idx)[0], logits)


@pytest.mark.parametrize('n_kv_head', [None, 2])
def test_qk_norm_bounds_every_attention_logit(n_kv_head):
    """qk_norm: every query and key has RMS 1 times its gains, so |score| <= sqrt(head_dim) * max|g_q| * max|g_k| = B
    however large the weights; seen in the attention maps as p_max / p_min <= exp(2B) within every causal row.
    Without qk_norm the same weights saturate the softmax far past that bound."""
    idx = torch.randint(0, 50, (2, 16))
    for qk_norm in (True, False):
        model = build(qk_norm=qk_norm, n_kv_head=n_kv_head)
        with torch.no_grad():
            for block in model.blocks:
                block.attn.qkv.weight.mul_(300)  # raw scores in the thousands
                if qk_norm:
                    block.attn.q_norm.weight.uniform_(-2, 2)
                    block.attn.k_norm.weight.uniform_(0.5, 1.5)
        spread, future = [], torch.ones(16, 16, dtype=torch.bool).triu(1)  # per layer: (largest log(p_max/p_min), 2B)
        for att, block in zip(model.attention_maps(idx), model.blocks):
            logp = att.double().log()
            gap = (logp.masked_fill(future, -math.inf).amax(-1) - logp.masked_fill(future, math.inf).amin(-1)).max()
            gap = gap.item()
            bound = 2 * math.sqrt(8) * (block.attn.q_norm.weight.abs().max() * block.attn.k_norm.weight.abs().max()
                                        ).item() if qk_norm else 2 * math.sqrt(8) * 2 * 1.5
            spread.append((gap, bound))
        assert all(gap <= bound + 1e-4 for gap, bound in spread) == qk_norm, spread


def test_relu2_is_squared_relu_with_the_ungated_width():
    """act='relu2': the MLP computes down(relu(up(x))^2) with a 4 * n_embd hidden layer, as GELU's."""
    mlp = build(act='relu2').blocks[0].mlp
    assert mlp.up.out_features == 4 * 32
    x = torch.randn(3, 5, 32)
    torch.testing.assert_close(mlp(x), mlp.down(torch.relu(mlp.up(x)) ** 2))


def test_seed_001_parameter_count_matches_hand_count():
    """Seed 001 (512 dims, 16 heads, 4 layers, 10k vocab, RoPE, SwiGLU 1344, RMSNorm, untied) has the hand-counted
    22,696,448 parameters (seed: ~23M); the vocab padding to 10,048 rows is not counted; FLOPs follow 6N + 12LTC."""
    c = GPTConfig(vocab_size=10_000, block_size=256, n_layer=4, n_head=16, n_embd=512, pos='rope', act='swiglu',
                  norm='rmsnorm', tie_weights=False)
    assert c.mlp_width == 1344 and c.padded_vocab == 10_048
    model = GPT(c)
    per_layer = 4 * 512 * 512 + 3 * 512 * 1344 + 2 * 512  # q,k,v,out; up,gate,down; two RMSNorm gains
    assert model.num_params() == 4 * per_layer + 512 + 2 * 10_000 * 512 == 22_696_448
    assert model.num_params(non_embedding=True) == 22_696_448 - 10_000 * 512
    assert model.flops_per_token() == 6 * (22_696_448 - 10_000 * 512) + 12 * 4 * 256 * 512
    tied = GPT(GPTConfig(**{**c.to_dict(), 'tie_weights': True, 'pos': 'learned'}))
    assert tied.num_params() == 4 * per_layer + 512 + 10_000 * 512 + 256 * 512
    assert tied.num_params(non_embedding=True) == 4 * per_layer + 512 + 10_000 * 512
    gqa = GPT(GPTConfig(**{**c.to_dict(), 'n_kv_head': 4}))  # keys and values shrink to 4 heads of 32
    assert model.num_params() - gqa.num_params() == 4 * 2 * 512 * (512 - 4 * 32)


def test_from_checkpoint_loads_and_rejects_bad_files(tmp_path):
    """from_checkpoint restores identical logits, with dropout set anew if asked; a missing file is a
    FileNotFoundError, a corrupt file, null/unknown config fields and mismatched weights a ValueError, each one line
    naming the file."""
    model = build(pos='learned', n_kv_head=2)
    path = tmp_path / 'ckpt.pt'
    state = model.state_dict()
    torch.save({'model': state, 'model_args': model.config.to_dict(), 'iter_num': 3}, path)
    loaded, ckpt = GPT.from_checkpoint(path)
    idx = torch.randint(0, 50, (2, 16))
    assert ckpt['iter_num'] == 3 and not loaded.training
    assert torch.equal(loaded(idx, idx)[0], model(idx, idx)[0])
    assert GPT.from_checkpoint(path, dropout=0.25)[0].config.dropout == 0.25
    (tmp_path / 'corrupt.pt').write_bytes(path.read_bytes()[:100])
    torch.save({'model': state, 'model_args': {**model.config.to_dict(), 'moe': True}}, tmp_path / 'unknown.pt')
    torch.save({'model': state, 'model_args': None}, tmp_path / 'null.pt')
    torch.save({'model': state, 'model_args': {**model.config.to_dict(), 'n_embd': 64}}, tmp_path / 'shape.pt')
    for name, error in (('missing.pt', FileNotFoundError), ('corrupt.pt', ValueError), ('unknown.pt', ValueError),
                        ('null.pt', ValueError), ('shape.pt', ValueError)):
        with pytest.raises(error) as e:
            GPT.from_checkpoint(tmp_path / name)
        assert '\n' not in str(e.value) and name in str(e.value)


def test_too_long_input_is_a_one_line_value_error():
    """forward refuses more than block_size tokens with a ValueError that says how to fix it."""
    with pytest.raises(ValueError, match=r'^sequence of 17 tokens is longer than block_size=16; crop the input$'):
        build()(torch.zeros(1, 17, dtype=torch.long))
