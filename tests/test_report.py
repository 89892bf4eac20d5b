"""report.py on a tiny model trained by the real train.py: every file is written and readable, the numbers in it
are the right ones, the model's equations are exactly its components, the decoding metrics are exact, and bad
inputs get a one-line answer."""
import csv
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

from configurator import describe
from conftest import ROOT, run_script
from model import GPT, GPTConfig
from report import STRATEGIES, distinct_n, model_math, repeated_share

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
SECTIONS = ('1. Model', '2. Setup', '3. Results', '4. Decoding study', '5. Discussion')
SMALL = ('--samples=4', '--max_new_tokens=16', "--prompts=('Once upon a time', 'Tom had a ball.')")


def copy_run(tiny_ckpt, dest):
    """A private copy of the tiny run, so the session's shared one stays untouched."""
    shutil.copytree(tiny_ckpt, dest, ignore=shutil.ignore_patterns('report', 'eval.json'))
    return dest


def fake_eval_json(out, iter_num, loss, base_loss):
    """An eval.json as eval.py --baseline=True writes it for out/best.pt, with made-up losses."""
    row = lambda l: {'loss': l, 'ppl': 2.0 ** l, 'bpb': l / 2, 'tokens': 999, 'bytes': 1998, 'windows': 1,
                     'block_size': 64, 'stride': 32}
    (out / 'eval.json').write_text(json.dumps({**row(loss), 'split': 'val', 'checkpoint': str(out / 'best.pt'),
                                               'iter_num': iter_num, 'baseline': row(base_loss)}))


def run_in_process(monkeypatch, *args):
    """Run report.py in this process (no second torch import): for the cases that need no fresh interpreter."""
    monkeypatch.setattr(sys, 'argv', ['report.py', *map(str, args)])
    runpy.run_path(str(ROOT / 'report.py'), run_name='__main__')


@pytest.fixture(scope='module')
def report(tiny_ckpt, tmp_path_factory):
    """report.py run once, as a user would, on a copy of the tiny run. The copy holds an eval.json for another
    iteration, which must be ignored as stale."""
    out = copy_run(tiny_ckpt, tmp_path_factory.mktemp('report_run') / 'run')
    ck = torch.load(out / 'best.pt', map_location='cpu', weights_only=True)
    fake_eval_json(out, ck['iter_num'] + 1, 1.2345, 6.7891)
    p = run_script('report.py', f'--out_dir={out}', '--device=cpu', *SMALL, timeout=240)
    return out, out / 'report', ck, p.stdout


def pdf_pages(data):
    """(the /Count of the PDF's page tree, the number of page objects)."""
    tree = [o for o in re.findall(rb'\bobj\b(.*?)\bendobj\b', data, re.S) if re.search(rb'/Type\s*/Pages\b', o)]
    assert len(tree) == 1
    return int(re.search(rb'/Count\s+(\d+)', tree[0]).group(1)), len(re.findall(rb'/Type\s*/Page\b(?!s)', data))


def test_writes_every_file(report):
    """The curves, one attention grid per layer, the weight figures and numbers, the decoding study, report.md and
    report.pdf exist; no temporary file is left behind."""
    out, rep, ck, _ = report
    expected = ['training_curves.png', 'weights/histograms.png', 'weights/spectral_norms.png', 'decoding.json',
                'weights/spectral_norms.json', 'weights/spectral_norms.csv', 'report.md', 'report.pdf']
    expected += [f'attention/layer{L}.png' for L in range(ck['model_args']['n_layer'])]
    for rel in expected:
        assert (rep / rel).is_file() and (rep / rel).stat().st_size > 0, rel
    assert not list(rep.rglob('*.tmp')), 'a temporary file was left behind'


def test_pngs_are_real_images(report):
    """Every PNG has the PNG signature, decodes, is a sizeable RGB(A) picture and is not blank."""
    _, rep, _, _ = report
    pngs = sorted(rep.rglob('*.png'))
    assert len(pngs) >= 5
    for path in pngs:
        assert path.read_bytes()[:8] == PNG_SIGNATURE, path
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.shape[2] in (3, 4), (path, img.shape)
        assert img.shape[0] >= 200 and img.shape[1] >= 300, (path, img.shape)
        assert img[..., :3].std() > 0.01, f'{path} is a blank image'


def test_pdf_is_text_pages_then_one_page_per_figure(report):
    """report.pdf is a complete PDF: its text part (at most 5 pages) has the report's sections in its outline, and
    every figure follows on a page of its own."""
    _, rep, ck, stdout = report
    data = (rep / 'report.pdf').read_bytes()
    assert data.startswith(b'%PDF-') and data.rstrip().endswith(b'%%EOF')
    m = re.search(r'(\d+) text pages \+ (\d+) figures', stdout)
    assert m, stdout
    text_pages, n_figures = map(int, m.groups())
    assert n_figures == 3 + ck['model_args']['n_layer']  # curves, one per layer, histograms, spectral norms
    assert 1 <= text_pages <= 5
    assert pdf_pages(data) == (text_pages + n_figures,) * 2
    titles = re.findall(rb'/Title \((.*?)\)\n', data)
    for title in SECTIONS + tuple(f'Figure {n}' for n in range(1, n_figures + 1)):
        assert any(t.startswith(title.encode()) for t in titles), title


def test_spectral_norms_equal_torch(report):
    """Every 2-D weight of the checkpoint is listed (tied copies once) with its spectral norm equal to
    torch.linalg.matrix_norm(W, 2), in the JSON and the CSV alike."""
    _, rep, ck, _ = report
    rows = json.loads((rep / 'weights' / 'spectral_norms.json').read_text())['matrices']
    sd = ck['model']
    for r in rows:
        W = sd[r['name']].float()
        assert list(W.shape) == r['shape']
        assert r['spectral_norm'] == pytest.approx(torch.linalg.matrix_norm(W, 2).item(), rel=1e-5)
        assert r['frobenius_norm'] == pytest.approx(W.norm().item(), rel=1e-5)
        assert r['spectral_norm'] <= r['frobenius_norm'] * (1 + 1e-6)
    listed = {r['name'] for r in rows}
    for name, t in sd.items():  # a matrix left out must be a tied copy of one listed
        if t.ndim == 2 and name not in listed:
            assert any(torch.equal(t, sd[n]) for n in listed), f'{name} has no spectral norm'
    with open(rep / 'weights' / 'spectral_norms.csv') as f:
        from_csv = {r['name']: float(r['spectral_norm']) for r in csv.DictReader(f)}
    assert from_csv == pytest.approx({r['name']: r['spectral_norm'] for r in rows}, rel=1e-6)


def test_report_md_has_its_sections_and_the_measured_numbers(report):
    """report.md has every section, display equations, the data and training setup read from meta.json and the
    checkpoint, a whole-split evaluation that beats the untrained baseline (the stale eval.json ignored), a decoding
    table whose numbers are decoding.json's, discussion statements carrying metrics.jsonl's numbers, and links only
    to figures that exist."""
    out, rep, ck, _ = report
    md = (rep / 'report.md').read_text()
    for section in SECTIONS:
        assert f'## {section}' in md, section
    assert md.count('$$') >= 2 * 8 and f"x^{{(0)}}_t = E_{{w_t}}" in md  # the tiny model uses RoPE: no position term
    model, _ = GPT.from_checkpoint(out / 'best.pt')
    assert f'{model.num_params():,} parameters' in md
    meta = ck['meta']
    for split in ('train', 'val'):
        assert f"| {split} | {meta['splits'][split]['stories']:,} | {meta['splits'][split]['tokens']:,} |" in md
    tc = ck['config']
    per_step = tc['batch_size'] * tc['gradient_accumulation_steps'] * tc['block_size']
    assert f"| tokens seen | {ck['iter_num'] * per_step:,}" in md and 'AdamW' in md
    exact = dict(re.findall(r'\| (this checkpoint|untrained)[^|]* \| ([\d.]+) \|', md))
    assert float(exact['this checkpoint']) < float(exact['untrained'])
    assert '1.2345' not in md and 'report.py scored the whole val split' in md  # the stale eval.json was ignored
    n_val = meta['splits']['val']['tokens'] - 1
    assert f'{n_val:,} predictions' in md  # every val token was scored, not a prefix
    table = json.loads((rep / 'decoding.json').read_text())['table']
    assert list(table) == [name for name, _ in STRATEGIES]
    for name, s in table.items():
        assert re.search(rf"\| {re.escape(name)} \| 4 \| {s['mean_tokens']:.1f} \| {s['distinct_1']:.3f} \|", md), name
    evals = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines() if '"eval"' in line]
    last = [e for e in evals if e['iter'] <= ck['iter_num']][-1]
    assert f"val loss {last['val_loss']:.3f} and train loss {last['train_loss']:.3f}" in md
    discussion = md.split('## 5. Discussion')[1].split('## Figures')[0]
    bullets = [line for line in discussion.splitlines() if line.startswith('- ')]
    assert len(bullets) >= 5 and all(re.search(r'\d', b) for b in bullets)  # every statement shows its number
    links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', md)
    assert len(links) == 3 + ck['model_args']['n_layer']
    for rel in links:
        assert (rep / rel).is_file(), rel


def test_reuses_eval_json_and_decodes_the_same_stories(report, tmp_path, monkeypatch):
    """An eval.py --baseline=True result for this very checkpoint supplies the exact rows instead of a new run, and
    a second run on the same checkpoint and seed gives the same stories and the same decoding table."""
    tiny, rep, ck, _ = report
    out = copy_run(tiny, tmp_path / 'run')
    fake_eval_json(out, ck['iter_num'], 1.2345, 6.7891)
    run_in_process(monkeypatch, f'--out_dir={out}', *SMALL)
    md = (out / 'report' / 'report.md').read_text()
    assert '| this checkpoint | 1.2345 |' in md and '| untrained, same architecture | 6.7891 |' in md
    assert 'eval.py scored the whole val split' in md
    first, second = (json.loads((d / 'decoding.json').read_text()) for d in (rep, out / 'report'))
    assert second['stories'] == first['stories'] and second['table'] == first['table']


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
    'speedrun': (dict(act='relu2', qk_norm=True, zero_init=True, logit_softcap=15.0, n_kv_head=2),
                 {'embedding', 'pos:rope', 'block:pre', 'norm:rmsnorm', 'attention', 'gqa', 'qk_norm', 'mlp:relu2',
                  'zero_init', 'output', 'softcap', 'tying', 'loss'}),
    'silu': (dict(act='silu', n_kv_head=6), {'embedding', 'pos:rope', 'block:pre', 'norm:rmsnorm', 'attention',
                                              'mlp:silu', 'output', 'tying', 'loss'}),
}


@pytest.mark.parametrize('name', CONFIGS)
def test_math_shows_exactly_the_components_of_the_config(name):
    """model_math lists exactly the config's components (a RoPE model has no position table, a post-norm model shows
    post-norm, grouped-query attention appears only with n_kv_head < n_head), with the model's own sizes, in LaTeX
    that matplotlib's mathtext renders (what the PDF uses)."""
    kwargs, want = CONFIGS[name]
    c = GPTConfig(**kwargs)
    math = model_math(c)
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


@pytest.mark.parametrize('case', ['no out_dir', 'no metrics', 'bad metrics line', 'no checkpoint', 'bad setting'])
def test_bad_input_is_one_line_error(tiny_ckpt, tmp_path, monkeypatch, case):
    """A missing out_dir, metrics log or checkpoint, a corrupt metrics line or an impossible setting ends in
    one line naming the problem (the script's exit, or what configure()'s hook prints for a raised error), before
    anything is written."""
    out = tmp_path / 'run'
    if case != 'no out_dir':
        out.mkdir()
    args = []
    if case == 'bad metrics line':
        (out / 'metrics.jsonl').write_text((tiny_ckpt / 'metrics.jsonl').read_text() + '{"kind": "eval", "it\n')
    elif case == 'no checkpoint':
        shutil.copy(tiny_ckpt / 'metrics.jsonl', out)
        args = [f'--ckpt={tmp_path / "missing.pt"}']
    elif case == 'bad setting':
        args = ['--samples=0']
    with pytest.raises((SystemExit, ValueError, OSError)) as e:
        run_in_process(monkeypatch, f'--out_dir={out}', *args)
    msg = e.value.code if isinstance(e.value, SystemExit) else describe(e.value)
    assert isinstance(msg, str) and '\n' not in msg, msg
    want = {'no out_dir': 'out_dir', 'no metrics': 'metrics.jsonl', 'bad metrics line': 'line',
            'no checkpoint': 'missing.pt', 'bad setting': 'samples'}[case]
    assert want in msg, msg
    assert not (out / 'report').exists()
