"""sweep.py on tiny models: a sweep trains every run, records the one that diverges and goes on, writes its
summary and plots, trains nothing when run again, resumes an interrupted run exactly, and refuses typos and
a second sweep on its directory before anything runs."""
import contextlib
import hashlib
import io
import json
import os
import runpy
import shutil
import sys

import matplotlib
matplotlib.use('Agg')
import matplotlib.image as mpimg
import pytest

import rundir
from conftest import ROOT, one_line, run_here, run_script

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# one layer of 16 channels: a step takes milliseconds, so a run costs little more than starting train.py
TINY = {'device': 'cpu', 'compile': False, 'dtype': 'float32', 'n_layer': 1, 'n_head': 2, 'n_embd': 16,
        'block_size': 32, 'batch_size': 4, 'gradient_accumulation_steps': 1, 'max_iters': 8, 'lr_decay_iters': 8,
        'warmup_iters': 2, 'eval_interval': 4, 'eval_iters': 2, 'log_interval': 1, 'wandb_log': False}
GOOD = ['learning_rate=0.003', 'learning_rate=0.01']
DIVERGES = 'learning_rate=1e+30'


def write_sweep(path, out, data, **spec):
    spec = {'base': '', 'out_dir': str(out), 'overrides': {**TINY, 'data_dir': str(data)}, **spec}
    path.write_text('"""A tiny test study: does it run?"""\n' + ''.join(f'{k} = {v!r}\n' for k, v in spec.items()))
    return path


def fingerprint(directory):
    """Every file under directory -> (content hash, modification time)."""
    out = {}
    for dirpath, _, names in os.walk(directory):
        for name in names:
            p = os.path.join(dirpath, name)
            out[os.path.relpath(p, directory)] = (hashlib.sha256(open(p, 'rb').read()).hexdigest(),
                                                  os.stat(p).st_mtime_ns)
    return out


def dry_run_listing(monkeypatch, capsys, path):
    """What `python sweep.py path --dry_run=True` prints, run in this process."""
    monkeypatch.setattr(sys, 'argv', ['sweep.py', str(path), '--dry_run=True'])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / 'sweep.py'), run_name='__main__')
    assert e.value.code == 0
    return capsys.readouterr().out


def sweep_here(monkeypatch, capsys, *args):
    """What `python sweep.py args` prints on stdout, run in this process; it must succeed."""
    with contextlib.redirect_stdout(io.StringIO()) as out:
        code, err = run_here(monkeypatch, capsys, 'sweep.py', *args, '--threads=1')
    assert code == 0, err
    return out.getvalue()


@pytest.fixture(scope='module')
def finished(tiny_data, tmp_path_factory):
    """A finished 3-run sweep (two at a time), the first run diverging: (sweep file, sweep dir, stdout)."""
    tmp = tmp_path_factory.mktemp('sweep')
    path = write_sweep(tmp / 'study.py', tmp / 'out', tiny_data, grid={'learning_rate': [1e30, 3e-3, 1e-2]},
                       target_val_loss=6.2)
    p = run_script('sweep.py', path, '--parallel=2')
    return path, tmp / 'out', p.stdout


def test_a_sweep_trains_each_run_and_writes_a_summary_and_overlaid_curves(finished):
    _, out, stdout = finished
    summary = json.loads((out / 'summary.json').read_text())
    rows = {r['run']: r for r in summary['runs']}
    assert sorted(rows) == sorted(GOOD + [DIVERGES]) and summary['question'] == 'A tiny test study: does it run?'
    for name in GOOD:
        r = rows[name]
        records = rundir.read_metrics(out / name / 'metrics.jsonl')
        evals = [x for x in records if x['kind'] == 'eval']
        assert r['status'] == 'done' and records[-1]['kind'] == 'done' and r['iters'] == 8
        assert r['tokens'] == 8 * 4 * 32 and r['settings'] == {'learning_rate': float(name.split('=')[1])}
        assert r['final_val_loss'] == evals[-1]['val_loss']
        assert r['best_val_loss'] == min(x['val_loss'] for x in evals[1:])
        assert r['params'] > 0 and r['train_time_s'] > 0 and r['wall_time_s'] >= r['train_time_s']
        assert (out / name / 'last.pt').is_file() and (out / name / 'best.pt').is_file()
        assert f'{name} done' in stdout
    # 6.2 nats: just below the untrained 6.24 of a 512-token vocabulary; the faster rate reaches it between evaluations
    # (interpolated, as train.py's 'target' record and compare.py measure it), the slower one never does
    evals = [x for x in rundir.read_metrics(out / GOOD[1] / 'metrics.jsonl') if x['kind'] == 'eval']
    assert evals[-2]['val_loss'] > 6.2 >= evals[-1]['val_loss']
    assert rows[GOOD[1]]['time_to_target_s'] == rundir.time_to_target(evals, 6.2) < evals[-1]['time']
    assert rows[GOOD[1]]['tokens_to_target'] == rundir.time_to_target(evals, 6.2, 'tokens')
    assert rows[GOOD[0]]['time_to_target_s'] is None and rows[GOOD[0]]['final_val_loss'] > 6.2
    md = (out / 'summary.md').read_text()
    assert all(f'| {name} |' in md for name in rows) and 'A tiny test study' in md and '(curves.png)' in md
    png = out / 'curves.png'
    assert png.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(str(png))
    assert img.shape[0] > 300 and img.shape[1] > 1000 and img[..., :3].std() > 0.05  # drawn, not blank
    assert not [f for f in os.listdir(out) if f.endswith('.tmp')]


def test_a_diverging_run_is_recorded_as_such_and_the_others_still_finish(finished):
    _, out, _ = finished
    r = {r['run']: r for r in json.loads((out / 'summary.json').read_text())['runs']}[DIVERGES]
    assert r['status'] == 'diverged' and r['diverged_at']['iter'] >= 1
    assert r['diverged_at']['loss'] in ('nan', 'inf', '-inf')  # summary.json stays valid JSON
    assert 'the loss is' in r['error']  # train.py's last stderr line
    assert r['final_val_loss'] is not None  # its last good numbers: the evaluation before it diverged
    assert f'`{DIVERGES}` diverged at step' in (out / 'summary.md').read_text()


def test_running_a_finished_sweep_again_trains_nothing(finished, monkeypatch, capsys):
    path, out, _ = finished
    before = {name: fingerprint(out / name) for name in GOOD + [DIVERGES]}
    stdout = sweep_here(monkeypatch, capsys, path)
    assert '3 finished before, skipped' in stdout and 'starting' not in stdout
    assert {name: fingerprint(out / name) for name in before} == before


def test_an_interrupted_run_resumes_and_ends_as_the_uninterrupted_one(finished, tmp_path, monkeypatch, capsys):
    """A run killed after its checkpoint at step 4 (last.pt, metrics up to 4, no 'done' record) is resumed by the
    rerun, not restarted, and ends at step 8 with the same losses as the run that was never interrupted."""
    path, out, _ = finished
    copy = tmp_path / 'out'
    shutil.copytree(out, copy)
    run = copy / GOOD[0]
    argv = json.loads((run / 'sweep.json').read_text())['argv']
    for name in ('last.pt', 'best.pt', 'metrics.jsonl'):
        os.remove(run / name)
    # the same run stopped at 4 (lr_decay_iters=8 keeps its schedule), then its 'done' record taken away
    argv = [a for a in argv if not a.startswith(('--out_dir=', '--init_from=', '--overwrite='))]
    assert run_here(monkeypatch, capsys, 'train.py', *argv, f'--out_dir={run}', '--max_iters=4')[0] == 0
    lines = (run / 'metrics.jsonl').read_text().splitlines(keepends=True)
    assert json.loads(lines[-1])['kind'] == 'done'
    (run / 'metrics.jsonl').write_text(''.join(lines[:-1]))
    others = {name: fingerprint(copy / name) for name in (GOOD[1], DIVERGES)}

    stdout = sweep_here(monkeypatch, capsys, path, f'--out_dir={copy}')
    assert f'{GOOD[0]}: resuming at iter 4' in stdout and '2 finished before, skipped' in stdout
    launches = [line for line in (run / 'train.log').read_text().splitlines() if line.startswith('$ ')]
    assert launches[-1].endswith('--init_from=resume')
    resumed = rundir.read_metrics(run / 'metrics.jsonl')
    straight = rundir.read_metrics(out / GOOD[0] / 'metrics.jsonl')
    assert [r['iter'] for r in resumed if r['kind'] == 'train'] == list(range(1, 9))
    assert resumed[-1]['kind'] == 'done' and resumed[-1]['iter'] == 8
    for a, b in zip([r for r in straight if r['kind'] == 'train'], [r for r in resumed if r['kind'] == 'train']):
        assert abs(a['loss'] - b['loss']) < 1e-6, (a, b)
    assert {name: fingerprint(copy / name) for name in others} == others


def test_a_run_trained_with_other_settings_is_refused_in_one_line(finished, tmp_path, monkeypatch, capsys):
    path, out, _ = finished
    copy = tmp_path / 'out'
    shutil.copytree(out, copy)
    before = {name: fingerprint(copy / name) for name in GOOD + [DIVERGES]}
    # as if the sweep file had been edited since: no mixing
    msg = one_line(*run_here(monkeypatch, capsys, 'sweep.py', path, f'--out_dir={copy}', '--eval_iters=3'))
    assert 'was trained with other settings (eval_iters=2 then, 3 now)' in msg and '--restart=' in msg
    assert {name: fingerprint(copy / name) for name in before} == before


@pytest.mark.parametrize('case', ['unknown key', 'wrong type', 'bad training value', 'bad model value',
                                  'unknown sweep name', 'command-line typo'])
def test_a_typo_fails_in_one_line_before_anything_runs(case, tiny_data, tmp_path, monkeypatch, capsys):
    out, extra, spec = tmp_path / 'out', [], {'grid': {'learning_rate': [1e-3, 3e-3]}}
    if case == 'unknown key':
        spec['runs'], expect = {'wide': {'n_embdd': 64}}, "did you mean 'n_embd'"
    elif case == 'wrong type':
        spec['runs'], expect = {'deep': {'n_layer': 'four'}}, "'n_layer' must be int"
    elif case == 'bad training value':  # refused by train.py's own checks, run here before anything starts
        spec['runs'], expect = {'cosine': {'lr_schedule': 'cosin'}}, "lr_schedule='cosin' is not known"
    elif case == 'bad model value':
        spec['runs'], expect = {'no-norm': {'norm': 'nope'}}, "norm='nope' is unknown"
    elif case == 'unknown sweep name':
        spec['gird'], expect = spec.pop('grid'), "'gird' is not a sweep setting"
    else:
        extra, expect = ['--max_itres=5'], "did you mean 'max_iters'"
    path = write_sweep(tmp_path / 'study.py', out, tiny_data, **spec)
    assert expect in one_line(*run_here(monkeypatch, capsys, 'sweep.py', path, *extra))
    assert not out.exists()  # nothing ran, nothing was written


def test_run_names_are_readable_filesystem_safe_and_named_runs_cross_the_grid(tiny_data, tmp_path, monkeypatch,
                                                                             capsys):
    path = write_sweep(tmp_path / 'study.py', tmp_path / 'out', tiny_data, grid={'seed': [1, 2]},
                       runs={'no-norm': {'norm': 'none'}, 'rms': {}, 'data/x y': {}})
    listed = [line.split(':')[0].strip() for line in dry_run_listing(monkeypatch, capsys, path).splitlines()
              if line.startswith('  ') and not line.startswith('   ')]
    assert listed == ['no-norm,seed=1', 'no-norm,seed=2', 'rms,seed=1', 'rms,seed=2', 'data_x_y,seed=1',
                      'data_x_y,seed=2']
    assert not (tmp_path / 'out').exists()  # a dry run writes nothing


def test_a_second_sweep_on_the_same_directory_is_refused(tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    path = write_sweep(tmp_path / 'study.py', out, tiny_data, grid={'learning_rate': [1e-3]})
    held = rundir.lock(str(out))  # as the first sweep holds it (flock: another open file is another holder)
    try:
        assert 'is in use by process' in one_line(*run_here(monkeypatch, capsys, 'sweep.py', path))
    finally:
        held.close()
    assert os.listdir(out) == ['.lock']  # the refused sweep wrote nothing
