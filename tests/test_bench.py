"""bench.py runs end to end on the CPU with a tiny model and writes complete, self-consistent figures.
No test looks at how fast anything is: only that every figure is there, positive and coherent."""
import json
import math
import sys

import numpy as np
import pytest

from conftest import one_line, run_here, run_script

TINY = ['--device=cpu', '--dtype=float32', '--compile=False', '--steps=3', '--warmup_steps=1']


def bench(tmp_path, *args):
    """Run bench.py with a JSON output in tmp_path; return (parsed JSON, CompletedProcess)."""
    out = tmp_path / 'nested' / 'bench.json'  # a folder that doesn't exist yet
    p = run_script('bench.py', *TINY, *args, f'--json_out={out}', timeout=120)
    return json.loads(out.read_text()), p


def test_train_config_sets_the_shape_and_the_figures_describe_that_model(tmp_path):
    """A train config (with train-only keys bench ignores) sets the model and batch; the timed steps really train
    (the loss on the fixed batch falls), the FLOPs are that model's, decoding with and without the cache gives the
    same greedy tokens, and the profiler trace is written."""
    cfg = tmp_path / 'train_tiny.py'
    cfg.write_text("out_dir = 'out-never-used'\nmax_iters = 5000\neval_interval = 100\n"
                   "n_layer = 1\nn_head = 2\nn_embd = 32\nblock_size = 32\nbatch_size = 2\n")
    trace = tmp_path / 'trace.json'
    r, p = bench(tmp_path, cfg, '--vocab_size=128', '--sample_tokens=8', '--sample_batches=(1, 3)', f'--profile={trace}',
                 '--learning_rate=1e-2', '--steps=6')
    from model import GPT, GPTConfig
    model = GPT(GPTConfig(**r['model_args']))
    assert (model.config.n_layer, model.config.n_embd, model.config.vocab_size) == (1, 32, 128)
    assert r['params'] == model.num_params() and r['config']['batch_size'] == 2 and 'max_iters' not in r['config']
    t = r['train']
    assert t['loss_last'] < t['loss_first'] - 0.5  # 12 AdamW steps at 1e-2 on one batch: it is being learned
    assert t['flops_per_token'] == model.flops_per_token() and t['tokens_per_iter'] == 2 * 32
    assert len(t['step_ms']) == 6 and all(ms > 0 for ms in t['step_ms']) and 0 < t['mfu'] < 1
    assert 'measured' in t['peak_flops_label']  # no table entry for a CPU: the peak was timed in this run
    assert t['peak_mem_bytes'] >= t['base_mem_bytes'] > 0
    s = r['sample']
    assert s['same_tokens'] is True  # greedy with and without the KV cache: the same story
    assert s['weight_bytes_per_token'] == model.num_params(non_embedding=True) * 4 and s['copy_bandwidth'] > 0
    assert set(s['batched_tokens_per_s']) == {'1', '3'} and all(v > 0 for v in s['batched_tokens_per_s'].values())
    assert r['profile'] == str(trace) and 'traceEvents' in json.loads(trace.read_text())
    assert not list(tmp_path.rglob('*.tmp*'))  # atomic writes leave no temporary files behind
    assert 'tokens/s' in p.stdout and 'MFU' in p.stdout and 'roofline' in p.stdout and 'batched' in p.stdout


def meta(vocab_size, tokens=4000):
    """The meta.json prepare.py would write for a uint16 train.bin (and an empty val.bin) with this vocabulary."""
    return {'version': 1, 'tokenizer': 'bpe', 'vocab_size': vocab_size, 'eot_id': vocab_size - 1, 'dtype': 'uint16',
            'splits': {'train': {'tokens': tokens}, 'val': {'tokens': 0}}}


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
    assert r['data'] == str(data) and r['sample'] is None
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
            (tmp_path / 'meta.json').write_text(json.dumps(meta(300, tokens=400)))
            named = 'token id 399'
    assert named in refusal(monkeypatch, capsys, f'--data={path}', f'--json_out={tmp_path / "b.json"}')
    assert not (tmp_path / 'b.json').exists()


@pytest.mark.parametrize('arg,words', [('--learning_rate=-1', 'learning_rate=-1.0 must be above 0'),
                                       ('--beta1=1', 'beta1=1.0 must be in [0, 1)'),
                                       ('--weight_decay=-1', 'weight_decay'), ('--dtype=float64', 'dtype'),
                                       ('--steps=-1', 'steps=-1 must be positive'),
                                       ('--sample_batches=(0,)', 'sample_batches=(0,) must be positive')])
def test_bad_settings_are_one_line_before_anything_runs(arg, words, monkeypatch, capsys, tmp_path):
    assert words in refusal(monkeypatch, capsys, arg, f'--json_out={tmp_path / "b.json"}')
    assert not (tmp_path / 'b.json').exists()
