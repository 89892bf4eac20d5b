"""Properties of decode.py: the KV cache changes nothing but speed, rows at different positions decode as if
alone, sequences joining and leaving a Batch decode as if alone, a compiled step never recompiles, sampling
rules, per-row generators and stops, beam search."""
import itertools
import math

import pytest
import torch

from decode import Batch, KVCache, beam_search, compile_step, decode_step, generate, sample_next
from model import GPT, GPTConfig, POS

torch.set_num_threads(1)


def build(seed=0, **kw):
    """A small random model: 2 layers, 4 heads of 8 dims, vocab 50 (padded to 64), block 16."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32), **kw})).eval()


def gen(model, prompt, n, **kw):
    """The prompt and its continuation, (B, T + n)."""
    return torch.cat([prompt, torch.stack(list(generate(model, prompt, n, **kw)), 1)], 1)


@pytest.mark.parametrize('pos,n_kv_head', [(p, None) for p in POS] + [('rope', 2), ('rope', 1), ('learned', 1)])
def test_kv_cache_generation_equals_recomputation(pos, n_kv_head):
    """Greedy generation with the KV cache equals full recomputation token for token, for every position option
    and GQA/MQA, over 40 new tokens from block_size 16 (the window slides and the cache is refilled 4 times),
    for a batch of prompts and for a prompt longer than block_size."""
    model = build(pos=pos, n_kv_head=n_kv_head)
    for prompt in (torch.randint(0, 50, (3, 5)), torch.randint(0, 50, (1, 21))):
        cached = gen(model, prompt, 40, temperature=0)
        plain = gen(model, prompt, 40, temperature=0, use_cache=False)
        assert cached.shape == (prompt.size(0), prompt.size(1) + 40)
        assert torch.equal(cached, plain)


def test_kv_cache_sampling_equals_recomputation_with_same_generator():
    """Sampled generation (temperature, top_k, top_p) draws the same tokens with and without the cache."""
    model = build(pos='learned', n_kv_head=2)
    prompt = torch.randint(0, 50, (2, 3))
    runs = [gen(model, prompt, 30, temperature=0.9, top_k=20, top_p=0.9, use_cache=c,
                           generator=torch.Generator().manual_seed(7)) for c in (True, False)]
    assert torch.equal(*runs)


def test_compiled_decode_step_equals_recomputation_without_recompiling():
    """The one-token decode step compiles as one graph (fullgraph, static shapes), and generation through it
    equals full recomputation; later tokens, slides, new prompts and new caches never recompile it. Dynamo's
    eager backend checks the capture in seconds; inductor's code generation is left to bench.py."""
    model = build(pos='rope', n_kv_head=2)
    step = compile_step(model, backend='eager')
    prompt = torch.randint(0, 50, (2, 3))
    gen(model, prompt, 2, temperature=0, step=step)  # the one compile
    with torch._dynamo.config.patch(error_on_recompile=True):
        for prompt in (prompt, torch.randint(0, 50, (2, 9))):
            assert torch.equal(gen(model, prompt, 40, temperature=0, step=step),
                               gen(model, prompt, 40, temperature=0, use_cache=False))


def test_batched_rows_draw_from_their_own_generators():
    """With one generator per row, a row's tokens depend only on its own generator: reseeding the other rows'
    generators leaves it unchanged (and changes theirs), with per-row eos stops; a row that stopped repeats eos."""
    model = build(pos='learned')
    prompt = torch.randint(0, 50, (1, 4)).expand(4, 4)
    for kw in (dict(temperature=1.2, top_k=20), dict(temperature=1.0, top_p=0.9, eos_id=7)):
        a = gen(model, prompt, 30, generator=[torch.Generator().manual_seed(s) for s in (0, 1, 2, 3)], **kw)
        b = gen(model, prompt, 30, generator=[torch.Generator().manual_seed(s) for s in (0, 11, 2, 13)], **kw)
        assert torch.equal(a[[0, 2]], b[[0, 2]]) and not torch.equal(a[[1, 3]], b[[1, 3]])
        if 'eos_id' in kw:
            stopped = [row for row in a[:, 4:] if (row == 7).any()]
            assert stopped and len(stopped) < 4  # rows stop on their own (or this test would prove nothing)
            for row in stopped:
                assert (row[(row == 7).nonzero()[0, 0]:] == 7).all()


@pytest.mark.parametrize('pos', POS)
def test_rows_at_different_positions_decode_as_if_each_were_alone(pos):
    """decode_step over a batch whose rows sit at different positions (as serve.py's requests do) gives each row
    the logits it gets decoded alone: the cache, the rotation, the position tables and the mask are per row."""
    model = build(pos=pos, n_kv_head=2)
    prompts = [torch.randint(0, 50, (1, n)) for n in (3, 7, 1)]
    alone = [model(torch.cat([p, torch.tensor([[5]])], 1))[0][0, -1] for p in prompts]
    caches = [KVCache(16) for _ in model.blocks]  # one batch of 3 rows, each prefilled with its own prompt
    with torch.no_grad():
        model.trunk(torch.zeros(3, 1, dtype=torch.long), torch.zeros(1, dtype=torch.long), caches)  # allocates
        for row, p in enumerate(prompts):
            model.trunk(p, torch.arange(p.size(1)), [c.view(row) for c in caches])
        logits = decode_step(model, torch.full((3,), 5), torch.tensor([p.size(1) for p in prompts]), caches)
    for row in range(3):
        torch.testing.assert_close(logits[row], alone[row], atol=1e-5, rtol=0)


def run_batch(batch, prompts, n, settings, admit_every=3):
    """Decode n tokens for each prompt through `batch`, admitting one sequence every admit_every steps while rows
    are free and removing each once it has n tokens (so sequences join and leave mid-flight) -> token lists."""
    out, todo, live, steps = {}, list(range(len(prompts))), {}, 0
    while todo or live:
        if todo and len(live) < batch.max_rows and steps % admit_every == 0:
            i = todo.pop(0)
            temperature, top_k, top_p, seed = settings[i]
            live[batch.add(prompts[i], temperature, top_k, top_p, torch.Generator().manual_seed(seed))] = i
            out[i] = []
        for seq, token in zip(list(batch.seqs), batch.step()):
            out[live[seq]].append(token)
            if len(out[live[seq]]) == n:
                batch.remove(seq)
                del live[seq]
        steps += 1
    return [out[i] for i in range(len(prompts))]


@pytest.mark.parametrize('pos', ['rope', 'learned'])
def test_sequences_joining_and_leaving_a_batch_decode_as_if_alone(pos):
    """Sequences added to a Batch at different steps, each with its own settings (greedy, temperature, top-k,
    top-p) and seeded generator, removed when done, some sliding past block_size 16 and some starting past it,
    get the very tokens generate gives each alone; also when steps run padded to fixed sizes, with at most 3 rows
    (so later sequences take over freed rows and their cache slots)."""
    model = build(pos=pos, n_kv_head=2)
    prompts = [torch.randint(0, 50, (n,)).tolist() for n in (3, 7, 1, 20, 5, 2)]
    settings = [(0, None, None, 0), (1.0, None, None, 1), (0.8, 10, None, 2), (1.2, None, 0.9, 3), (0, None, None, 4),
                (1.0, 5, 0.8, 5)]
    alone = [[t.item() for t in generate(model, torch.tensor([p]), 40, temperature=s[0], top_k=s[1], top_p=s[2],
                                         generator=torch.Generator().manual_seed(s[3]))]
             for p, s in zip(prompts, settings)]
    for sizes in (None, (1, 2)):
        assert run_batch(Batch(model, 3, sizes=sizes), prompts, 40, settings) == alone


def test_batch_with_a_compiled_step_compiles_once_per_size():
    """A Batch stepping a compiled step through every size 1..4 as sequences come and go compiles it once per size
    (padding to sizes (1, 2, 4)), and decodes what the eager step decodes."""
    model = build(pos='rope')
    prompts = [torch.randint(0, 50, (n,)).tolist() for n in (2, 5, 3, 4, 6)]
    settings = [(0, None, None, 0)] * 5
    step = compile_step(model, backend='eager')
    compiled = Batch(model, 4, step, sizes=(1, 2, 4))
    run_batch(compiled, prompts[:4], 3, settings, admit_every=1)  # one compile for each of the sizes
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert run_batch(compiled, prompts, 30, settings) == run_batch(Batch(model, 4), prompts, 30, settings)


def test_batch_refuses_what_it_cannot_hold():
    """A full batch and an empty sequence are one-line ValueErrors."""
    batch = Batch(build(), 1)
    for call in (lambda: batch.add([]), lambda: [batch.add([1]), batch.add([2])]):
        with pytest.raises(ValueError) as e:
            call()
        assert '\n' not in str(e.value)


def test_generation_stops_at_eos():
    """With eos_id, each row emits eos forever after its first eos, and generation ends once every row has one."""
    model = build()
    free = gen(model, torch.randint(0, 50, (1, 4)), 20, temperature=0)
    eos = free[0, 4 + 5].item()  # the greedy 6th token: greedy decoding with eos_id must stop right there
    stopped = gen(model, free[:, :4], 20, temperature=0, eos_id=eos)
    first = (free[0, 4:] == eos).nonzero()[0, 0].item()
    assert torch.equal(stopped, free[:, :4 + first + 1])
    prompts = torch.randint(0, 50, (4, 2))
    out = gen(model, prompts, 200, temperature=3.0, eos_id=0, generator=torch.Generator().manual_seed(0))
    new = out[:, 2:]
    hit = new == 0
    assert hit.any(1).all() and hit[:, -1].all() and new.size(1) < 200  # ended early, every row on eos
    for row in hit:
        assert row[row.nonzero()[0, 0]:].all()  # once eos, always eos
    assert not hit[:, :-1].all(0).any()  # it stopped at the first step where all rows had finished


def test_sampling_rules():
    """temperature 0 and top_k=1 are argmax; top_p keeps the smallest set of tokens reaching p (always the top
    one); the padded vocabulary is never emitted; a seeded generator reproduces samples."""
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, 4)
    g = torch.Generator().manual_seed(0)
    assert (sample_next(logits, 0) == 0).all() and (sample_next(logits, 1.0, top_k=1, generator=g) == 0).all()
    assert set(sample_next(logits, 1.0, top_p=0.5, generator=g).tolist()) == {0}
    assert set(sample_next(logits, 1.0, top_p=0.75, generator=g).tolist()) == {0, 1}
    assert set(sample_next(logits, 1.0, top_p=0.81, generator=g).tolist()) == {0, 1, 2}
    assert set(sample_next(logits, 1.0, top_k=2, generator=g).tolist()) == {0, 1}
    assert torch.equal(sample_next(logits, 1.0, generator=torch.Generator().manual_seed(1)),
                       sample_next(logits, 1.0, generator=torch.Generator().manual_seed(1)))
    model = build()
    with torch.no_grad():
        model.lm_head.weight[50:] = 100.0  # make the 14 padding ids overwhelmingly likely if they leaked
    out = gen(model, torch.randint(0, 50, (8, 2)), 30, temperature=2.0, generator=g)
    assert out.max() < 50 and model(out[:, :16])[0].size(-1) == 50


def test_top_p_equals_the_full_sort_nucleus():
    """top_p, which sorts only the 64 likeliest tokens unless some row's nucleus is bigger, draws exactly the
    tokens the textbook full sort draws from the same uniform numbers: peaked rows, flat rows whose nucleus
    holds thousands of tokens, and both in one batch."""
    def full_sort(logits, p, generator):
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        sorted_logits = sorted_logits.masked_fill(probs.cumsum(dim=-1) - probs >= p, float('-inf'))
        cdf = logits.scatter(-1, order, sorted_logits).softmax(dim=-1).cumsum(dim=-1)
        u = torch.minimum(torch.rand(len(logits), 1, generator=generator) * cdf[:, -1:],
                          torch.nextafter(cdf[:, -1:], torch.zeros(1)))
        return torch.searchsorted(cdf, u, right=True).squeeze(-1)

    torch.manual_seed(0)
    peaked, flat = torch.randn(8, 5000) * 4, torch.randn(8, 5000) * 0.1
    for logits in (peaked, flat, torch.cat((peaked, flat))):
        for p in (0.1, 0.5, 0.9, 0.99):
            for seed in range(3):
                got = sample_next(logits, 1.0, top_p=p, generator=torch.Generator().manual_seed(seed))
                assert torch.equal(got, full_sort(logits, p, torch.Generator().manual_seed(seed)))


def test_bad_generation_arguments_raise_one_line_value_errors():
    """Negative temperature, top_p outside (0, 1], top_k < 1, an empty prompt, a negative max_new_tokens and a
    generator list that does not match the rows raise ValueError with a one-line message."""
    model = build()
    idx = torch.zeros(1, 3, dtype=torch.long)
    for call in (lambda: gen(model, idx, 5, temperature=-1), lambda: gen(model, idx, 5, top_p=0.0),
                 lambda: gen(model, idx, 5, top_k=0), lambda: gen(model, idx[:, :0], 5),
                 lambda: list(generate(model, idx, -1)), lambda: gen(model, idx, 5, generator=[torch.Generator()] * 2),
                 lambda: beam_search(model, idx.expand(2, 3), 5, 2), lambda: beam_search(model, idx[:, :0], 5, 2),
                 lambda: beam_search(model, idx, 5, 0)):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value) and '\n' not in str(e.value)


def test_beam_width_one_is_greedy():
    """beam_search with beam_width=1 returns exactly the greedy continuation, with and without an eos."""
    model = build(pos='rope')
    prompt = torch.randint(0, 50, (1, 5))
    greedy = gen(model, prompt, 30, temperature=0)
    assert torch.equal(beam_search(model, prompt, 30, 1), greedy)
    eos = greedy[0, 12].item()
    assert torch.equal(beam_search(model, prompt, 30, 1, eos_id=eos), gen(model, prompt, 30, temperature=0, eos_id=eos))


@pytest.mark.parametrize('block_size', [8, 5])
def test_wide_beam_finds_the_most_probable_continuation(block_size):
    """A beam as wide as all 2-token prefixes keeps every candidate, so over 3 new tokens it returns the exact
    argmax of the joint log-probability of all 12^3 continuations. Block 8 checks that cache rows follow their
    beams; block 5 also slides the window (it keeps the newest 2 tokens once a 6th arrives). Weights are scaled
    up so each token's distribution depends strongly on its context (a stale cache row then shows)."""
    conts = torch.tensor(list(itertools.product(range(12), repeat=3)))  # (1728, 3)
    for seed in range(4):
        model = build(pos='learned', vocab_size=12, block_size=block_size, seed=seed)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(6)
        prompt = torch.randint(0, 12, (1, 4))
        best = beam_search(model, prompt, 3, beam_width=144)
        seqs = torch.cat([prompt.expand(len(conts), 4), conts], 1)
        logp = 0
        for n in range(4, 7):  # each step's distribution, from the same window the generator uses
            window = seqs[:, :n] if n <= block_size else seqs[:, n - block_size // 2:n]
            logp = logp + torch.log_softmax(model(window)[0][:, -1], -1).gather(1, seqs[:, n:n + 1])[:, 0]
        assert torch.equal(best[0], seqs[logp.argmax()])
