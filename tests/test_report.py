"""report.py on a tiny model trained by the real train.py: its results are eval.evaluate's, its decoding table is
recomputed from the stories it saves and each story from its own seed, its spectral norms are torch's, its equations
are exactly the model's components, its PDF is the text then one page per figure, and bad input gets one line."""
import contextlib
import csv
import io
import json
import re
import runpy
import shutil
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.image as mpimg
import pytest
import torch
from matplotlib import mathtext

import data
import tokenizer
from conftest import ROOT, one_line, run_here
from decode import generate
from equations import equations
from eval import evaluate, token_logprobs
from model import GPT, GPTConfig
from report import REP_N, STRATEGIES, distinct_n, repeated_share

SECTIONS = ('1. Model', '2. Setup', '3. Results', '4. Decoding study', '5. Discussion')
PROMPTS = ('Once upon a time', 'Tom had a ball.')
SMALL = ('--samples=5', '--max_new_tokens=16', f'--prompts={PROMPTS!r}', '--baseline_tokens=2000')


def copy_run(tiny_ckpt, dest):
    """A private copy of the tiny run, so the session's shared one stays untouched."""
    shutil.copytree(tiny_ckpt, dest, ignore=shutil.ignore_patterns('report', 'eval.json'))
    return dest


def fake_eval_json(out, iter_num, loss, base_loss):
    """An eval.json as eval.py --baseline=True writes it for out/best.pt, with made-up losses."""
    row = lambda l: {'loss': l, 'ppl': 2.0 ** l, 'bpb': l / 2, 'tokens': 999, 'bytes': 1998, 'windows': 1,  # noqa
                     'block_size': 64, 'stride': 32}
    (out / 'eval.json').write_text(json.dumps({**row(loss), 'split': 'val', 'checkpoint': str(out / 'best.pt'),
                                               'iter_num': iter_num, 'baseline': row(base_loss)}))


def run_report(*args):
    """report.py run in this process, as `python report.py args` runs it -> what it printed."""
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed), torch.random.fork_rng(devices=[]):
        mp.setattr(sys, 'argv', ['report.py', *map(str, args)])
        mp.setattr(sys, 'excepthook', sys.excepthook)
        runpy.run_path(str(ROOT / 'report.py'), run_name='__main__')
    return printed.getvalue()


@pytest.fixture(scope='module')
def report(tiny_ckpt, tmp_path_factory):
    """report.py run once on a copy of the tiny run, which holds an eval.json for another iteration (stale: to be
    ignored) -> (run dir, report dir, checkpoint, the model, what report.py printed)."""
    out = copy_run(tiny_ckpt, tmp_path_factory.mktemp('report_run') / 'run')
    model, ck = GPT.from_checkpoint(out / 'best.pt')
    fake_eval_json(out, ck['iter_num'] + 1, 1.2345, 6.7891)
    printed = run_report(f'--out_dir={out}', '--device=cpu', *SMALL)
    return out, out / 'report', ck, model, printed


def test_results_table_is_eval_evaluate(report, tiny_data):
    """The results rows are eval.evaluate's numbers: the checkpoint over the whole val split, the untrained model
    (seed 0) over the first --baseline_tokens val tokens, each with the bits per byte of the text it scored; the
    stale eval.json is ignored."""
    out, rep, ck, model, _ = report
    md = (rep / 'report.md').read_text()
    val, meta = data.open_split(tiny_data, 'val'), data.read_meta(tiny_data)
    T = model.config.block_size
    trained = evaluate(model, val, T, T // 2, 32, 'cpu', n_bytes=meta['splits']['val']['bytes'])
    enc, head = tokenizer.from_checkpoint(ck, 'best.pt'), val[:2000]
    head_bytes = sum(len(enc.decode_single_token_bytes(t)) for t in head[1:].tolist() if t != enc.eot_token)
    torch.manual_seed(0)
    untrained = evaluate(GPT(model.config), head, T, T // 2, 32, 'cpu', n_bytes=head_bytes)
    for name, r in (('this checkpoint', trained), ('untrained, same architecture', untrained)):
        assert f"| {name} | {r['loss']:.4f} | {r['ppl']:,.2f} | {r['bpb']:.4f} |" in md, name
    assert trained['loss'] < untrained['loss']
    assert f"{trained['tokens']:,} predictions" in md and f"first {untrained['tokens']:,} of them" in md
    assert '1.2345' not in md and 'report.py scored' in md


def test_decoding_table_is_recomputed_from_the_saved_stories(report):
    """decoding.json's stories are what its table measures: story i continues prompt i % len(prompts), is at most
    max_new_tokens long and ends at its first <|endoftext|>; greedy and beam search repeat one story per prompt; each
    number of the table (and report.md's row) follows from the stories, log p from eval.token_logprobs."""
    _, rep, ck, model, _ = report
    saved = json.loads((rep / 'decoding.json').read_text())
    enc = tokenizer.from_checkpoint(ck, 'best.pt')
    eot, md = enc.eot_token, (rep / 'report.md').read_text()
    prompt_ids = [[eot] + enc.encode(p) for p in PROMPTS]
    assert list(saved['table']) == list(saved['stories']) == [name for name, _ in STRATEGIES]
    for name, table in saved['table'].items():
        stories = saved['stories'][name]
        assert [s['prompt'] for s in stories] == [i % len(PROMPTS) for i in range(5)]
        new = [s['tokens'] for s in stories]
        assert all(1 <= len(s) <= 16 and eot not in s[:-1] for s in new)
        if name in ('greedy', 'beam 4'):
            assert new[2] == new[0] and new[3] == new[1]
        texts = [s[:-1] if s[-1] == eot else s for s in new]
        logp = sum(token_logprobs(model, prompt_ids[s['prompt']] + s['tokens'])[-len(s['tokens']):].sum().item()
                   for s in stories)
        reps = [r for r in map(repeated_share, texts) if r is not None]
        want = {'stories': 5, 'mean_tokens': sum(map(len, texts)) / 5, 'logp_per_token': logp / sum(map(len, new)),
                **{f'distinct_{k}': distinct_n(texts, k) for k in (1, 2, 3)},
                f'repeated_{REP_N}grams': sum(reps) / len(reps) if reps else None,
                'ended_with_eot': sum(s[-1] == eot for s in new) / 5}
        assert table == pytest.approx(want, rel=1e-9), name
        assert f"| {name} | 5 | {want['mean_tokens']:.1f} | {want['distinct_1']:.3f} |" in md, name


@pytest.mark.parametrize('name', ['temperature 1.0', 'top-p 0.9'])
def test_each_story_is_drawn_from_its_own_seed(report, name):
    """Story i is what generate() draws for its prompt alone with a generator seeded seed + i: the same seed gives
    the same stories, and a story does not depend on the others decoded in its batch."""
    _, rep, ck, model, _ = report
    saved = json.loads((rep / 'decoding.json').read_text())
    enc, kw = tokenizer.from_checkpoint(ck, 'best.pt'), dict(STRATEGIES)[name]
    eot = enc.eot_token
    for i, story in enumerate(saved['stories'][name]):
        x = torch.tensor([[eot] + enc.encode(PROMPTS[i % 2])])
        g = torch.Generator().manual_seed(saved['seed'] + i)
        new = torch.stack(list(generate(model, x, 16, eos_id=eot, generator=[g], **kw)), 1)[0].tolist()
        assert story['tokens'] == (new[:new.index(eot) + 1] if eot in new else new), i


def test_reuses_a_matching_eval_json(report, tmp_path):
    """An eval.py --baseline=True result for this very checkpoint supplies both result rows instead of a new
    evaluation, and the same seed decodes the same stories again. The setup names the demo's recipe when the
    checkpoint's config holds it (NorMuon, the embedding's and head's own rates, the WSD schedule)."""
    tiny, rep, ck, _, _ = report
    out = copy_run(tiny, tmp_path / 'run')
    best = torch.load(out / 'best.pt', weights_only=True)
    best['config'] |= dict(optimizer='muon', normuon=True, embedding_lr=0.03, head_lr=8e-3, lr_schedule='wsd',
                           cooldown_frac=0.5, min_lr=8e-4, lr_decay_iters=40)
    torch.save(best, out / 'best.pt')
    fake_eval_json(out, ck['iter_num'], 1.2345, 6.7891)
    run_report(f'--out_dir={out}', *SMALL)
    md = (out / 'report' / 'report.md').read_text()
    assert '| this checkpoint | 1.2345 |' in md and '| untrained, same architecture | 6.7891 |' in md
    assert 'eval.py (' in md
    assert 'constant until the last 0.5 of the decay, then linear to 0.0008 at step 40' in md
    assert "NorMuon (peak rate" in md and '(the embedding at 0.03, the head at 0.008, without weight decay)' in md
    first, second = (json.loads((d / 'decoding.json').read_text()) for d in (rep, out / 'report'))
    assert second['stories'] == first['stories'] and second['table'] == first['table']


def test_spectral_norms_equal_torch(report):
    """Every 2-D weight of the checkpoint is listed (tied copies once) with its spectral norm equal to
    torch.linalg.matrix_norm(W, 2), in the JSON and the CSV alike."""
    _, rep, ck, _, _ = report
    rows = json.loads((rep / 'weights' / 'spectral_norms.json').read_text())['matrices']
    sd = ck['model']
    for r in rows:
        W = sd[r['name']].float()
        assert list(W.shape) == r['shape']
        assert r['spectral_norm'] == pytest.approx(torch.linalg.matrix_norm(W, 2).item(), rel=1e-5)
        assert r['frobenius_norm'] == pytest.approx(W.norm().item(), rel=1e-5)
    listed = {r['name'] for r in rows}
    for name, t in sd.items():  # a matrix left out must be a tied copy of one listed
        if t.ndim == 2 and name not in listed:
            assert any(torch.equal(t, sd[n]) for n in listed), f'{name} has no spectral norm'
    with open(rep / 'weights' / 'spectral_norms.csv') as f:
        from_csv = {r['name']: float(r['spectral_norm']) for r in csv.DictReader(f)}
    assert from_csv == pytest.approx({r['name']: r['spectral_norm'] for r in rows}, rel=1e-6)


def test_report_md_shows_the_setup_and_rules_over_the_numbers(report):
    """report.md has every section, the data and training setup read from meta.json and the checkpoint, a
    discussion whose every statement carries a number (one is metrics.jsonl's gap at the checkpoint), and links to
    figures that exist and are not blank; no temporary file is left behind."""
    out, rep, ck, model, _ = report
    md = (rep / 'report.md').read_text()
    for section in SECTIONS:
        assert f'## {section}' in md, section
    assert f'{model.num_params():,} parameters' in md
    for split, s in ck['meta']['splits'].items():
        assert f"| {split} | {s['stories']:,} | {s['tokens']:,} | {s['bytes']:,} |" in md
    tc = ck['config']
    per_step = tc['batch_size'] * tc['gradient_accumulation_steps'] * tc['block_size']
    assert f"| tokens seen | {ck['iter_num'] * per_step:,}" in md and 'AdamW' in md
    evals = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines() if '"eval"' in line]
    last = [e for e in evals if e['iter'] <= ck['iter_num']][-1]
    assert f"val loss {last['val_loss']:.3f} and train loss {last['train_loss']:.3f}" in md
    discussion = md.split('## 5. Discussion')[1].split('## Figures')[0]
    bullets = [line for line in discussion.splitlines() if line.startswith('- ')]
    assert len(bullets) >= 5 and all(re.search(r'\d', b) for b in bullets)
    links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', md)
    assert len(links) == 3 + model.config.n_layer  # curves, one per layer, histograms, spectral norms
    for rel in links:
        img = mpimg.imread(rep / rel)
        assert img.shape[0] >= 200 and img.shape[1] >= 300 and img[..., :3].std() > 0.01, rel
    assert not list(rep.rglob('*.tmp'))


def test_pdf_is_text_pages_then_one_page_per_figure(report):
    """report.pdf is a complete PDF: its text part (at most 5 pages) has the report's sections in its outline, and
    every figure follows on a page of its own."""
    _, rep, _, model, printed = report
    pdf = (rep / 'report.pdf').read_bytes()
    assert pdf.startswith(b'%PDF-') and pdf.rstrip().endswith(b'%%EOF')
    text_pages, n_figures = map(int, re.search(r'(\d+) text pages \+ (\d+) figures', printed).groups())
    assert n_figures == 3 + model.config.n_layer and 1 <= text_pages <= 5
    tree = [o for o in re.findall(rb'\bobj\b(.*?)\bendobj\b', pdf, re.S) if re.search(rb'/Type\s*/Pages\b', o)]
    assert int(re.search(rb'/Count\s+(\d+)', tree[0]).group(1)) == text_pages + n_figures
    assert len(re.findall(rb'/Type\s*/Page\b(?!s)', pdf)) == text_pages + n_figures
    titles = re.findall(rb'/Title \((.*?)\)\n', pdf)
    for title in SECTIONS + tuple(f'Figure {n}' for n in range(1, n_figures + 1)):
        assert any(t.startswith(title.encode()) for t in titles), title


CONFIGS = {  # config -> the components its equations must show, no more and no fewer
    'llama': (dict(), {'embedding', 'pos:rope', 'block:pre', 'norm:rmsnorm', 'attention', 'mlp:swiglu', 'output',
                       'tying', 'loss'}),
    'gpt2': (dict(pos='learned', norm='layernorm', act='gelu', bias=True, dropout=0.1),
             {'embedding', 'pos:learned', 'dropout', 'block:pre', 'norm:layernorm', 'attention', 'mlp:gelu', 'output',
              'tying', 'loss'}),
    'vaswani': (dict(pos='sinusoidal', norm='layernorm', norm_pos='post', act='relu', label_smoothing=0.1,
                     tie_weights=False),
                {'embedding', 'pos:sinusoidal', 'block:post', 'norm:layernorm', 'attention', 'mlp:relu', 'output',
                 'loss:label_smoothing'}),
    'gqa': (dict(n_head=8, n_kv_head=2, n_embd=256, act='geglu', pos='none', norm='none'),
            {'embedding', 'pos:none', 'block:unnormalised', 'attention', 'gqa', 'mlp:geglu', 'output', 'tying',
             'loss'}),
    'speedrun': (dict(act='relu2', qk_norm=True, zero_init=True, logit_softcap=15.0, n_kv_head=2, x0_mix=True),
                 {'embedding', 'pos:rope', 'block:pre', 'norm:rmsnorm', 'attention', 'gqa', 'qk_norm', 'mlp:relu2',
                  'zero_init', 'x0_mix', 'output', 'softcap', 'tying', 'loss'}),
    'silu': (dict(act='silu', n_kv_head=6), {'embedding', 'pos:rope', 'block:pre', 'norm:rmsnorm', 'attention',
                                              'mlp:silu', 'output', 'tying', 'loss'}),
}


@pytest.mark.parametrize('name', CONFIGS)
def test_equations_show_exactly_the_components_of_the_config(name):
    """equations() lists exactly the config's components (a RoPE model has no position table, a post-norm model shows
    post-norm, grouped-query attention appears only with n_kv_head < n_head), with the model's own sizes, in LaTeX
    that matplotlib's mathtext renders (what the PDF uses)."""
    kwargs, want = CONFIGS[name]
    c = GPTConfig(**kwargs)
    math = equations(c)
    assert [k for k, _, _ in math] and {k for k, _, _ in math} == want
    latex = ' '.join(e for _, _, eqs in math for e in eqs)
    assert ('P_t' in latex) == (c.pos in ('learned', 'sinusoidal'))  # a position table is added only when there is one
    assert (r'\tilde{Q}' in latex) == (c.pos == 'rope')
    assert ('g(i)' in latex) == ((c.n_kv_head or c.n_head) < c.n_head)
    assert rf'\mathbb{{R}}^{{{c.vocab_size} \times {c.n_embd}}}' in latex  # the embedding, sizes substituted
    assert rf'\sqrt{{{c.head_dim}}}' in latex and rf'{c.n_embd} \times {c.mlp_width}' in latex
    assert ('E^\\top' in latex) == c.tie_weights
    for _, _, eqs in math:
        for e in eqs:
            mathtext.MathTextParser('path').parse(f'${e}$')  # raises on what mathtext can't set


def test_decoding_metrics_are_exact_on_hand_made_stories():
    """distinct-n pools n-grams over stories without crossing them; the repeated share counts the n-grams that
    already occurred earlier in the same story."""
    assert distinct_n([[1, 2, 1, 2]], 1) == 2 / 4
    assert distinct_n([[1, 2, 1, 2]], 2) == 2 / 3  # (1,2) (2,1) (1,2)
    assert distinct_n([[1, 2], [1, 2]], 2) == 1 / 2  # the same bigram in two stories
    assert distinct_n([[1, 2], [3]], 2) == 1.0  # (2, 3) would cross the stories: not a bigram
    assert distinct_n([[1], [2]], 2) is None
    assert repeated_share([5, 6, 7, 8, 5, 6, 7, 8], 4) == 1 / 5  # (5678) (6785) (7856) (8567) (5678): one repeat
    assert repeated_share([1, 1, 1, 1, 1, 1], 4) == 2 / 3  # three 4-grams, all (1111): two repeat the first
    assert repeated_share(list(range(10)), 4) == 0.0
    assert repeated_share([1, 2, 3], 4) is None


@pytest.mark.parametrize('case, args, words', [
    ('no out_dir', [], 'does not exist'), ('no metrics', [], 'metrics.jsonl'), ('bad metrics line', [], 'line'),
    ('no checkpoint', ['--ckpt=missing.pt'], 'missing.pt'), ('run', ['--samples=0'], 'samples'),
    ('run', ['--prompts=()'], 'prompts'), ('run', ['--baseline_tokens=1'], 'baseline_tokens'),
    ('run', ['--eval_stride=-1'], 'stride'),
    ('run', ['--eval_batch_size=0'], 'batch_size'), ('run', ['--data_dir=nowhere'], 'nowhere'),
    ('run', ['--device=tpu'], 'tpu')])
def test_bad_input_is_one_line_before_anything_is_written(tiny_ckpt, tmp_path, monkeypatch, capsys, case, args,
                                                          words):
    """A missing out_dir, metrics log, checkpoint or data directory, a damaged metrics line or an impossible setting
    ends in one line naming the problem, before report/ is written."""
    out = tmp_path / 'run'
    if case == 'run':
        copy_run(tiny_ckpt, out)
    elif case != 'no out_dir':
        out.mkdir()
    if case == 'bad metrics line':
        (out / 'metrics.jsonl').write_text((tiny_ckpt / 'metrics.jsonl').read_text() + '{"kind": "eval", "it\n')
    elif case == 'no checkpoint':
        shutil.copy(tiny_ckpt / 'metrics.jsonl', out)
    assert words in one_line(*run_here(monkeypatch, capsys, 'report.py', f'--out_dir={out}', *args))
    assert not (out / 'report').exists()
