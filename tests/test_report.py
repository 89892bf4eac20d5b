"""report.py on a tiny model trained by the real train.py: every file is written and readable, the numbers
in it are the right ones, and bad inputs get a one-line answer."""
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

from conftest import ROOT, run_script
from model import GPT

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


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
    p = run_script('report.py', f'--out_dir={out}', '--device=cpu', '--max_new_tokens=24', timeout=240)
    return out, out / 'report', ck, p.stdout


def pdf_page_count(data):
    """Pages in a PDF as matplotlib writes it: one uncompressed /Pages tree whose /Count is the total."""
    counts = re.findall(rb'/Type\s*/Pages\b.*?/Count\s+(\d+)', data, re.S)
    assert len(counts) == 1, counts
    return int(counts[0])


def test_writes_every_file(report):
    """The curves, one attention grid per layer, the weight figures and numbers, report.md and report.pdf exist."""
    out, rep, ck, _ = report
    expected = ['training_curves.png', 'weights/histograms.png', 'weights/spectral_norms.png',
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


def test_pdf_holds_text_pages_and_every_figure(report):
    """report.pdf is a complete PDF whose page count is the text pages plus one page per figure."""
    _, rep, ck, stdout = report
    data = (rep / 'report.pdf').read_bytes()
    assert data.startswith(b'%PDF-') and data.rstrip().endswith(b'%%EOF')
    m = re.search(r'(\d+) text pages \+ (\d+) figures', stdout)
    assert m, stdout
    text_pages, n_figures = map(int, m.groups())
    assert n_figures == 3 + ck['model_args']['n_layer']  # curves, one per layer, histograms, spectral norms
    assert text_pages >= 1
    assert pdf_page_count(data) == text_pages + n_figures


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


def test_report_md_has_the_final_numbers(report):
    """report.md quotes the last eval of metrics.jsonl, the parameter count, a trained model that beats its
    untrained baseline, the three decoding methods, and links only figures that exist."""
    out, rep, ck, _ = report
    md = (rep / 'report.md').read_text()
    evals = [json.loads(line) for line in (out / 'metrics.jsonl').read_text().splitlines()
             if line.strip() and json.loads(line)['kind'] == 'eval']
    last = evals[-1]
    for value in (f"{last['val_loss']:.4f}", f"{last['val_ppl']:.2f}", f"{last['val_bpb']:.4f}",
                  f"{last['train_loss']:.4f}"):
        assert value in md, value
    model, _ = GPT.from_checkpoint(out / 'best.pt')
    assert f'{model.num_params():,} parameters' in md
    exact = dict(re.findall(r'\| (this checkpoint|untrained)[^|]* \| ([\d.]+) \|', md))
    assert float(exact['this checkpoint']) < float(exact['untrained'])
    assert '1.2345' not in md and 'report.py scored' in md  # the stale eval.json was ignored
    for heading in ('### greedy', '### top-k', '### nucleus'):
        assert heading in md
    links = re.findall(r'!\[[^\]]*\]\(([^)]+)\)', md)
    assert len(links) == 3 + ck['model_args']['n_layer']
    for rel in links:
        assert (rep / rel).is_file(), rel


def test_reuses_eval_json_of_this_checkpoint(tiny_ckpt, tmp_path, monkeypatch):
    """An eval.py --baseline=True result for this very checkpoint supplies the exact rows instead of a new run."""
    out = copy_run(tiny_ckpt, tmp_path / 'run')
    ck = torch.load(out / 'best.pt', map_location='cpu', weights_only=True)
    fake_eval_json(out, ck['iter_num'], 1.2345, 6.7891)
    run_in_process(monkeypatch, f'--out_dir={out}', '--max_new_tokens=4')
    md = (out / 'report' / 'report.md').read_text()
    assert '| this checkpoint, exact | 1.2345 |' in md and '| untrained, exact | 6.7891 |' in md
    assert 'eval.py scored the whole val split' in md


@pytest.mark.parametrize('case', ['no out_dir', 'no metrics', 'bad metrics line', 'no checkpoint', 'bad setting'])
def test_bad_input_is_one_line_error(tiny_ckpt, tmp_path, monkeypatch, case):
    """A missing out_dir, metrics log or checkpoint, a corrupt metrics line or an impossible setting ends in
    a one-line SystemExit naming the problem, before anything is written."""
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
        args = ['--top_p=1.5']
    with pytest.raises(SystemExit) as e:
        run_in_process(monkeypatch, f'--out_dir={out}', *args)
    msg = e.value.code
    assert isinstance(msg, str) and '\n' not in msg, msg  # a str code: Python prints it alone and exits 1
    want = {'no out_dir': 'out_dir', 'no metrics': 'metrics.jsonl', 'bad metrics line': 'line',
            'no checkpoint': 'missing.pt', 'bad setting': 'top_p'}[case]
    assert want in msg, msg
    assert not (out / 'report').exists()
