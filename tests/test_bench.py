"""bench.py runs end to end on the CPU with a tiny model and writes complete, self-consistent figures.
No test looks at how fast anything is: only that every figure is there, positive and coherent."""
import json
import math

import numpy as np
import pytest

from conftest import one_line, run_here, run_script

TINY = ['--device=cpu', '--dtype=float32', '--compile=False', '--steps=3', '--warmup_steps=1']


def bench(tmp_path, *args):
    """Run bench.py with a JSON output in tmp_path; return (parsed JSON, CompletedProcess)."""
    out = tmp_path / 'nested' / 'bench.json'  # a folder that doesn't exist yet
    p = run_script('bench.py', *TINY, *args, f'--json_out={out}', timeout=120)
    return json.loads(out.read_text()), p


def test_train_config_sets_the_shape_and_every_figure_is_positive_and_consistent(tmp_path):
    """A train config (with train-only keys bench ignores) sets the model and batch; the JSON holds
    positive training and sampling figures that agree with each other, and the profiler trace is written."""
    cfg = tmp_path / 'train_tiny.py'
    cfg.write_text("out_dir = 'out-never-used'\nmax_iters = 5000\neval_interval = 100\n"
                   "n_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\nbatch_size = 2\n")
    trace = tmp_path / 'trace.json'
    r, p = bench(tmp_path, cfg, '--vocab_size=128', '--sample_tokens=8', '--sample_batches=(1, 3)', f'--profile={trace}')

    assert r['model_args']['n_layer'] == 1 and r['model_args']['n_embd'] == 32
    assert r['model_args']['vocab_size'] == 128 and r['model_args']['block_size'] == 32
    assert r['device'] == 'cpu' and r['dtype'] == 'float32' and r['compile'] is False
    assert r['torch'] and r['device_name'] and r['params'] >= r['params_non_embedding'] > 0
    assert r['config']['batch_size'] == 2 and 'max_iters' not in r['config']

    t = r['train']
    for key in ('tokens_per_s', 'ms_per_iter', 'ms_per_iter_median', 'ms_per_iter_min', 'mfu', 'flops_per_token',
                'achieved_flops', 'peak_flops', 'peak_mem_bytes', 'base_mem_bytes', 'warmup_s'):
        assert t[key] > 0, key
    assert 'measured' in t['peak_flops_label']  # no table entry for a CPU: the peak was timed in this run
    assert t['tokens_per_iter'] == 2 * 32 and len(t['step_ms']) == t['steps'] == 3
    assert math.isclose(t['tokens_per_s'], t['tokens_per_iter'] / (t['ms_per_iter'] / 1000), rel_tol=1e-6)
    assert math.isclose(t['mfu'], t['tokens_per_s'] * t['flops_per_token'] / t['peak_flops'], rel_tol=1e-6)
    assert t['ms_per_iter_min'] <= t['ms_per_iter_median'] <= t['ms_per_iter_max']
    assert t['peak_mem_bytes'] >= t['base_mem_bytes']
    assert math.isfinite(t['loss_first']) and math.isfinite(t['loss_last'])

    s = r['sample']
    assert s['new_tokens'] == 8 and s['cached_tokens_per_s'] > 0 and s['uncached_tokens_per_s'] > 0
    assert s['same_tokens'] is True  # greedy with and without the KV cache: the same story
    assert math.isclose(s['ms_per_token'], 1000 / s['cached_tokens_per_s'], rel_tol=1e-6)
    assert s['cached_tokens_per_s'] >= s['cached_tokens_per_s_median'] and len(s['runs_s']) == 3
    assert s['weight_bytes_per_token'] == r['params_non_embedding'] * 4 and s['copy_bandwidth'] > 0
    assert math.isclose(s['roofline_tokens_per_s'], s['copy_bandwidth'] / s['weight_bytes_per_token'], rel_tol=1e-6)
    parts = s['breakdown_ms_per_token']
    assert 'outside ops' in parts and all(v >= 0 for v in parts.values()) and sum(parts.values()) > 0
    assert set(s['batched_tokens_per_s']) == {'1', '3'} and all(v > 0 for v in s['batched_tokens_per_s'].values())

    assert r['profile'] == str(trace) and 'traceEvents' in json.loads(trace.read_text())
    assert not list(tmp_path.rglob('*.tmp*'))  # atomic writes leave no temporary files behind
    assert 'tokens/s' in p.stdout and 'MFU' in p.stdout and 'roofline' in p.stdout and 'batched' in p.stdout


def meta(vocab_size):
    """The meta.json prepare.py would write for a uint16 train.bin/val.bin pair with this vocabulary."""
    return {'version': 1, 'tokenizer': 'bpe', 'vocab_size': vocab_size, 'eot_id': vocab_size - 1, 'dtype': 'uint16',
            'splits': {'train': {'tokens': 4000}, 'val': {'tokens': 0}}}


def test_real_data_takes_the_vocab_from_meta_json(tmp_path):
    """--data given a prepare.py-style folder reads batches from its train.bin; the model's vocab comes from
    meta.json, not --vocab_size, and --sample_tokens=0 skips the sampling benchmark."""
    data = tmp_path / 'data'
    data.mkdir()
    np.random.default_rng(0).integers(0, 300, size=4000).astype(np.uint16).tofile(data / 'train.bin')
    (data / 'meta.json').write_text(json.dumps(meta(300)))
    r, _ = bench(tmp_path, f'--data={data}', '--vocab_size=999', '--sample_tokens=0',
                 '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=32', '--batch_size=2')
    assert r['model_args']['vocab_size'] == 300
    assert r['data'] == str(data / 'train.bin') and r['sample'] is None
    assert r['train']['tokens_per_s'] > 0 and math.isfinite(r['train']['loss_last'])


def test_steps_0_benchmarks_decoding_only(tmp_path, monkeypatch, capsys):
    """--steps=0 skips training: the JSON has no training figures and still every decoding one."""
    out = tmp_path / 'bench.json'
    code, err = run_here(monkeypatch, capsys, 'bench.py', *TINY, '--steps=0', '--sample_tokens=4', '--sample_batches=(2,)',
                         '--n_layer=1', '--n_head=2', '--n_embd=32', '--block_size=16', '--vocab_size=64', f'--json_out={out}')
    r = json.loads(out.read_text())
    assert code == 0 and r['train'] is None and r['sample']['same_tokens'] is True
    assert r['sample']['cached_tokens_per_s'] > 0 and set(r['sample']['batched_tokens_per_s']) == {'2'}


def refusal(monkeypatch, capsys, *args):
    """The one line bench.py prints on stderr, and nothing else, when it refuses these args."""
    return one_line(*run_here(monkeypatch, capsys, 'bench.py', *TINY, *args))


@pytest.mark.parametrize('case', ['missing_bin', 'missing_meta', 'ids past the vocabulary'])
def test_bad_data_path_exits_with_one_line_message(tmp_path, monkeypatch, capsys, case):
    """A wrong --data exits with one line naming the file, not a traceback (nor an IndexError in the model)."""
    if case == 'missing_bin':
        path, named = tmp_path / 'nope.bin', 'nope.bin'
    else:
        path, named = tmp_path / 'train.bin', 'meta.json'
        np.arange(400, dtype=np.uint16).tofile(path)
        if case == 'ids past the vocabulary':
            (tmp_path / 'meta.json').write_text(json.dumps(meta(300)))
            named = 'token id 399'
    assert named in refusal(monkeypatch, capsys, f'--data={path}', f'--json_out={tmp_path / "b.json"}')
    assert not (tmp_path / 'b.json').exists()


@pytest.mark.parametrize('arg,words', [('--learning_rate=-1', 'learning_rate=-1.0 must be above 0'),
                                       ('--beta1=1', 'beta1=1.0 must be in [0, 1)'), ('--seed=-1', 'seed=-1'),
                                       ('--weight_decay=-1', 'weight_decay'), ('--dtype=float64', 'dtype'),
                                       ('--steps=-1', 'steps=-1 must not be negative'),
                                       ('--sample_batches=(0,)', 'sample_batches=(0,) must hold positive batch sizes')])
def test_bad_settings_are_one_line_before_anything_runs(arg, words, monkeypatch, capsys, tmp_path):
    assert words in refusal(monkeypatch, capsys, arg, f'--json_out={tmp_path / "b.json"}')
    assert not (tmp_path / 'b.json').exists()
