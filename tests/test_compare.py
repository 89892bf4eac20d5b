"""compare.py on a folder of runs as a sweep of recipes x seeds leaves it: runs grouped by recipe, bpb from each run's
eval.json (eval.py's, run again when the file did not score best.pt on the val split), time to target by
rundir.time_to_target, and the table README's recipe table shows."""
import json
import runpy
import shutil
import sys

import pytest

import rundir
from conftest import ROOT

# (training seconds, val loss) at each evaluation, 10 steps apart, and the run's eval.json bpb
RUNS = {'baseline,seed=1': ([(0, 6.0), (10, 4.0), (20, 3.0)], 1.2),
        'baseline,seed=2': ([(0, 6.0), (11, 4.5), (22, 3.4)], 1.0),   # final 3.4: misses the mean 3.2
        'fast,seed=1': ([(0, 6.0), (8, 3.5), (16, 2.5)], 0.9),
        'fast,seed=2': ([(0, 6.0), (9, 3.6), (18, 2.9)], None)}       # its eval.json scored another split


def make_runs(folder, ckpt):
    for name, (evals, bpb) in RUNS.items():
        run = folder / name
        shutil.copytree(ckpt, run)  # its best.pt, for eval.py
        recs = [{'kind': 'eval', 'iter': 10 * i, 'tokens': 1000 * i, 'time': t, 'val_loss': v}
                for i, (t, v) in enumerate(evals)] + [{'kind': 'done', 'iter': 20, 'time': evals[-1][0]}]
        (run / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in recs))
        (run / 'eval.json').write_text(json.dumps({'bpb': bpb or 99.0, 'split': 'val' if bpb else 'train',
                                                   'checkpoint': str(run / 'best.pt')}))
    shutil.copytree(ckpt, folder / 'fast,seed=3')  # unfinished: its log has no 'done' record
    lines = (folder / 'fast,seed=3' / 'metrics.jsonl').read_text().splitlines(keepends=True)
    (folder / 'fast,seed=3' / 'metrics.jsonl').write_text(''.join(lines[:-1]))


def test_the_table_reads_eval_json_and_rundir_time_to_target(tiny_ckpt, tmp_path, monkeypatch, capsys):
    make_runs(tmp_path, tiny_ckpt)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # for eval.py: two cores shared with the other tests
    monkeypatch.setattr(sys, 'argv', ['compare.py', f'--runs={tmp_path}'])
    runpy.run_path(str(ROOT / 'compare.py'), run_name='__main__')
    out = capsys.readouterr().out
    result = json.loads((tmp_path / 'compare.json').read_text())
    goal = (3.0 + 3.4) / 2  # the reference's mean final val loss
    assert result['target_val_loss'] == pytest.approx(goal) and sorted(result['groups']) == ['baseline', 'fast']
    fresh = json.loads((tmp_path / 'fast,seed=2' / 'eval.json').read_text())  # eval.py's, over the val split
    assert fresh['split'] == 'val' and fresh['bpb'] < 99
    bpbs = {'baseline': [1.2, 1.0], 'fast': [0.9, fresh['bpb']]}
    for group, g in result['groups'].items():
        assert [r['run'] for r in g['runs']] == [f'{group},seed=1', f'{group},seed=2']  # seed 3 never finished
        assert g['bpb'] == pytest.approx([sum(bpbs[group]) / 2, min(bpbs[group]), max(bpbs[group])])
        for r in g['runs']:
            evals = [x for x in rundir.read_metrics(tmp_path / r['run'] / 'metrics.jsonl') if x['kind'] == 'eval']
            assert r['time_to_target'] == rundir.time_to_target(evals, result['target_val_loss'])
    base, fast = result['groups']['baseline'], result['groups']['fast']
    assert base['reached'] == 1 and base['time_to_target'] == pytest.approx([18] * 3)  # 10 + 0.8 of 10 s
    assert fast['x_ref'] == pytest.approx(fast['time_to_target'][0] / 21) and base['x_ref'] == 1  # 21 s: its time
    assert ('| baseline | 2 | 1.1000 (1.0000..1.2000) | 20 | 1.05 | 18 s, 1 of 2 runs | 1.00 |' in out.splitlines())
    assert '| recipe | runs | val bpb, mean (min..max) | steps | s/step | time to 3.200, mean (min..max) | x ref |' in out
