"""train.py, run as a user runs it (subprocesses on the tiny real dataset): it learns, stops after exactly
max_iters steps, resumes bit-for-bit, splits data correctly under DDP, and fails clearly."""
import glob
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, run_script
from model import GPT

# a model small enough that a step takes milliseconds on one CPU thread
TINY = ['--device=cpu', '--compile=False', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32',
        '--block_size=64', '--eval_iters=4', '--log_interval=1', '--wandb_log=False']


def train(data, out, *args, check=True, env=None):
    return run_script('train.py', f'--data_dir={data}', f'--out_dir={out}', *TINY, *args, check=check, env=env)


def records(out, kind):
    with open(os.path.join(out, 'metrics.jsonl')) as f:
        return [r for r in map(json.loads, f) if r['kind'] == kind]


def sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


@pytest.fixture(scope='module')
def short_run(tiny_data, tmp_path_factory):
    """out_dir of a 20-step run evaluated at 0, 10 and 20."""
    out = tmp_path_factory.mktemp('short_run')
    train(tiny_data, out, '--max_iters=20', '--eval_interval=10', '--batch_size=8', '--gradient_accumulation_steps=1',
          '--learning_rate=3e-3',
          '--warmup_iters=2', '--min_lr=3e-4')
    return out


def test_a_20_step_run_lowers_the_validation_loss(short_run):
    evals = {r['iter']: r for r in records(short_run, 'eval')}
    assert sorted(evals) == [0, 10, 20]
    assert evals[20]['val_loss'] < evals[10]['val_loss'] < evals[0]['val_loss'] - 0.3
    assert evals[20]['train_loss'] < evals[0]['train_loss'] - 0.3


def test_eval_metrics_are_consistent_with_the_data(short_run, tiny_data):
    meta = json.loads((tiny_data / 'meta.json').read_text())
    bytes_per_token = meta['splits']['val']['bytes'] / meta['splits']['val']['tokens']
    for r in records(short_run, 'eval'):
        assert set(r) == {'kind', 'iter', 'tokens', 'time', 'train_loss', 'val_loss', 'val_ppl', 'val_bpb'}
        assert r['val_ppl'] == pytest.approx(math.exp(r['val_loss']))
        assert r['val_bpb'] == pytest.approx(r['val_loss'] / math.log(2) / bytes_per_token)
        assert r['tokens'] == r['iter'] * 8 * 64  # steps x batch_size x block_size


def test_exactly_max_iters_optimizer_steps_with_the_scheduled_lr(short_run):
    """Train records for iterations 1..20, a checkpoint at 20, and AdamW's own step counter at 20 (not 21)."""
    steps = records(short_run, 'train')
    assert [r['iter'] for r in steps] == list(range(1, 21))
    assert set(steps[0]) == {'kind', 'iter', 'tokens', 'time', 'loss', 'lr', 'ms', 'tok_s', 'mfu'}
    ckpt = torch.load(short_run / 'last.pt', weights_only=True)
    assert ckpt['iter_num'] == 20
    assert {int(s['step']) for s in ckpt['optimizer']['state'].values()} == {20}
    lr = {r['iter']: r['lr'] for r in steps}  # linear warmup to the peak at step 2, cosine down to min_lr at 20
    assert lr[1] == pytest.approx(1.5e-3) and lr[2] == pytest.approx(3e-3) and lr[20] == pytest.approx(3e-4)
    assert all(lr[i] > lr[i + 1] for i in range(2, 20))
    with open(short_run / 'metrics.jsonl') as f:  # a normal end is the last record: sweep.py skips such a run
        last = json.loads(f.readlines()[-1])
    assert last['kind'] == 'done' and last['iter'] == 20 and last['time'] >= steps[-1]['time'] > 0


def test_checkpoints_load_safely_and_best_holds_the_lowest_val_loss(short_run, tiny_data):
    contract = {'model', 'model_args', 'optimizer', 'scaler', 'iter_num', 'best_val_loss', 'config', 'tokenizer',
                'meta', 'rng', 'sampler', 'version'}
    evals = records(short_run, 'eval')
    best_iter = min((r for r in evals if r['iter'] > 0), key=lambda r: r['val_loss'])['iter']
    for name in ('last.pt', 'best.pt'):
        ckpt = torch.load(short_run / name, weights_only=True)  # weights_only: plain data, no pickled code
        assert set(ckpt) == contract
        assert not any(k.startswith(('_orig_mod.', 'module.')) for k in ckpt['model'])
        assert ckpt['meta'] == json.loads((tiny_data / 'meta.json').read_text())
        assert ckpt['config']['max_iters'] == 20 and ckpt['model_args']['vocab_size'] == ckpt['meta']['vocab_size']
        model, _ = GPT.from_checkpoint(short_run / name)
        assert model.config.n_layer == 2
    best = torch.load(short_run / 'best.pt', weights_only=True)
    assert best['iter_num'] == best_iter
    assert best['best_val_loss'] == pytest.approx(min(r['val_loss'] for r in evals if r['iter'] > 0))


def test_resume_reproduces_an_uninterrupted_run(tiny_data, tmp_path):
    """Stop at 6 (max_iters=6), resume to 12: the same losses as a straight 12-step run, with dropout on, so the
    RNG states, the data sampler, the optimizer and the schedule all have to come back exactly."""
    args = ['--batch_size=4', '--gradient_accumulation_steps=2', '--dropout=0.1', '--eval_interval=4',
            '--learning_rate=3e-3', '--warmup_iters=2', '--lr_decay_iters=12']
    train(tiny_data, tmp_path / 'straight', '--max_iters=12', *args)
    train(tiny_data, tmp_path / 'split', '--max_iters=6', *args)
    train(tiny_data, tmp_path / 'split', '--max_iters=12', '--init_from=resume', *args)
    a, b = records(tmp_path / 'straight', 'train'), records(tmp_path / 'split', 'train')
    assert [r['iter'] for r in b] == list(range(1, 13))
    times = [r['time'] for r in b]  # training time goes on from the checkpoint's, it does not restart at 0
    assert times == sorted(times) and times[6] > times[5] > 0
    assert [r['iter'] for r in records(tmp_path / 'split', 'done')] == [12]  # the end at 6 was not the end
    for ra, rb in zip(a, b):
        assert abs(ra['loss'] - rb['loss']) < 1e-6 and ra['lr'] == rb['lr'], (ra, rb)
    ea = {r['iter']: r['val_loss'] for r in records(tmp_path / 'straight', 'eval')}
    eb = {r['iter']: r['val_loss'] for r in records(tmp_path / 'split', 'eval')}
    assert abs(ea[12] - eb[12]) < 1e-6 and abs(ea[8] - eb[8]) < 1e-6
    wa = torch.load(tmp_path / 'straight' / 'last.pt', weights_only=True)['model']
    wb = torch.load(tmp_path / 'split' / 'last.pt', weights_only=True)['model']
    assert all(torch.allclose(wa[k], wb[k], rtol=0, atol=1e-6) for k in wa)


DUMP_PARAMS = """
import os, runpy, sys, torch
sys.path.insert(0, {root!r})
sys.argv = [{script!r}] + sys.argv[1:]
g = runpy.run_path({script!r}, run_name='__main__')
torch.save(g['raw_model'].state_dict(), os.path.join({out!r}, 'params_rank%s.pt' % os.environ['RANK']))
"""


def test_ddp_on_two_processes_matches_one_process_with_the_same_global_batch(tiny_data, tmp_path):
    """torchrun --nproc_per_node=2 with gloo: both ranks end with identical weights, and every logged loss and
    the final weights equal a single-process run with the same global batch (4 micro-steps x 4 sequences, so each
    rank accumulates 2 micro-steps and exercises both the no_sync and the synchronising backward)."""
    args = ['--batch_size=4', '--gradient_accumulation_steps=4', '--max_iters=5', '--eval_interval=5',
            '--learning_rate=3e-3', '--warmup_iters=2']
    train(tiny_data, tmp_path / 'single', *args)
    out = tmp_path / 'ddp'
    wrapper = tmp_path / 'dump_params.py'  # runs train.py, then saves each rank's weights as it holds them
    wrapper.write_text(DUMP_PARAMS.format(root=str(ROOT), script=str(ROOT / 'train.py'), out=str(out)))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(wrapper),
           f'--data_dir={tiny_data}', f'--out_dir={out}', *TINY, *args]
    p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    p0, p1 = (torch.load(out / f'params_rank{r}.pt', weights_only=True) for r in (0, 1))
    assert all(torch.equal(p0[k], p1[k]) for k in p0)
    single = torch.load(tmp_path / 'single' / 'last.pt', weights_only=True)
    assert all(torch.allclose(p0[k], single['model'][k], rtol=1e-4, atol=1e-6) for k in p0)
    for a, b in zip(records(tmp_path / 'single', 'train'), records(out, 'train'), strict=True):
        assert b['loss'] == pytest.approx(a['loss'], rel=1e-5) and b['tokens'] == a['tokens']
    ea, eb = records(tmp_path / 'single', 'eval'), records(out, 'eval')
    assert [r['val_loss'] for r in eb] == pytest.approx([r['val_loss'] for r in ea], rel=1e-5)
    ckpt = torch.load(out / 'last.pt', weights_only=True)
    assert not any(k.startswith('module.') for k in ckpt['model']) and len(ckpt['rng']['torch']) == 2


def test_nonfinite_loss_stops_with_a_message_and_keeps_the_last_checkpoint(short_run, tiny_data, tmp_path):
    out = tmp_path / 'run'
    shutil.copytree(short_run, out)
    before = {name: sha(out / name) for name in ('last.pt', 'best.pt')}
    p = train(tiny_data, out, '--init_from=resume', '--max_iters=60', '--eval_interval=10', '--batch_size=8',
              '--gradient_accumulation_steps=1',
              '--learning_rate=1e30', '--warmup_iters=0', check=False)
    assert p.returncode != 0
    assert 'Traceback' not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert 'the loss is' in p.stderr and 'last.pt still holds iteration 20' in p.stderr
    diverged = records(out, 'diverged')
    assert len(diverged) == 1 and diverged[0]['iter'] > 20 and not math.isfinite(diverged[0]['loss'])
    assert {name: sha(out / name) for name in before} == before


@pytest.fixture(scope='module')
def vaswani_wandb_run(tiny_data, tmp_path_factory):
    """out_dir of an 8-step run with the Vaswani schedule (warmup 4) and wandb logging in offline mode."""
    out = tmp_path_factory.mktemp('wandb_run')
    train(tiny_data, out, '--max_iters=8', '--eval_interval=4', '--batch_size=4', '--lr_schedule=vaswani',
          '--warmup_iters=4', '--learning_rate=1e-3', '--wandb_log=True', '--wandb_run_name=offline-test',
          env={'WANDB_MODE': 'offline'})
    return out


def test_wandb_offline_run_writes_its_files_under_out_dir(vaswani_wandb_run):
    runs = glob.glob(str(vaswani_wandb_run / 'wandb' / 'offline-run-*' / 'run-*.wandb'))
    assert len(runs) == 1 and os.path.getsize(runs[0]) > 0


def test_vaswani_schedule_warms_up_to_learning_rate_then_decays_as_inverse_sqrt(vaswani_wandb_run):
    lr = {r['iter']: r['lr'] for r in records(vaswani_wandb_run, 'train')}
    assert lr[4] == pytest.approx(1e-3)  # the peak, normalised to learning_rate
    assert [lr[s] for s in (1, 2, 3)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4])
    assert [lr[s] for s in (5, 8)] == pytest.approx([1e-3 * math.sqrt(4 / 5), 1e-3 * math.sqrt(4 / 8)])


def test_sigterm_saves_a_loadable_checkpoint_and_exits_cleanly(tiny_data, tmp_path):
    cmd = [sys.executable, str(ROOT / 'train.py'), f'--data_dir={tiny_data}', f'--out_dir={tmp_path}', *TINY,
           '--batch_size=4', '--max_iters=1000000', '--eval_interval=1000000']
    p = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / 'metrics.jsonl').exists() or not records(tmp_path, 'train'):
            assert p.poll() is None and time.time() < deadline, 'train.py did not start training'
            time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        stdout, stderr = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, stderr
    ckpt = torch.load(tmp_path / 'last.pt', weights_only=True)
    assert ckpt['iter_num'] == records(tmp_path, 'train')[-1]['iter'] >= 1
    assert 'init_from=resume' in stdout
    GPT.from_checkpoint(tmp_path / 'last.pt')


@pytest.mark.parametrize('case', ['missing data', 'block too large', 'vocab mismatch', 'damaged checkpoint'])
def test_user_errors_are_one_line_messages(case, short_run, tiny_data, tmp_path):
    data, args = tiny_data, []
    if case == 'missing data':
        data, expect = tmp_path / 'nowhere', 'prepare.py'
    elif case == 'block too large':
        args, expect = ['--block_size=100000000'], 'too few for block_size'
    elif case == 'damaged checkpoint':  # e.g. a copy cut short
        (tmp_path / 'run').mkdir()
        (tmp_path / 'run' / 'last.pt').write_bytes((short_run / 'last.pt').read_bytes()[:5000])
        args, expect = ['--init_from=resume'], 'cannot resume'
    else:  # data prepared with another vocabulary than the checkpoint's model
        data = tmp_path / 'other_data'
        shutil.copytree(tiny_data, data)
        meta = json.loads((data / 'meta.json').read_text())
        meta['vocab_size'] += 256
        (data / 'meta.json').write_text(json.dumps(meta))
        shutil.copytree(short_run, tmp_path / 'run')
        args, expect = ['--init_from=resume', '--max_iters=30'], 'vocabulary mismatch'
    p = run_script('train.py', f'--data_dir={data}', f'--out_dir={tmp_path / "run"}', *TINY, *args, check=False)
    assert p.returncode != 0
    assert len(p.stderr.strip().splitlines()) == 1 and expect in p.stderr, p.stderr


def train_settings():
    """train.py's default settings, by running only its settings block (the lines before configure())."""
    source = (ROOT / 'train.py').read_text()
    start = source.index('# settings')
    block = source[source.index('\n', start):source.index('from configurator import configure')]
    g = {'torch': torch}
    exec(block, g)
    return {k: v for k, v in g.items() if k != 'torch' and not k.startswith('__')}


# config -> (vocab of the data its comment prepares, parameters its seed states or implies)
CONFIGS = {'train_tinystories': (4096, 24.9e6), 'train_tinystories_cpu': (4096, 1.28e6),
           'seed000': (8000, 1.85e6), 'seed001': (10000, 23e6), 'seed002': (50257, 124e6),
           'seed003': (50257, 34.1e6), 'seed004': (32000, 45.2e6)}


@pytest.mark.parametrize('name', CONFIGS)
def test_each_config_builds_the_model_its_comment_describes(name):
    from configurator import configure
    from model import GPTConfig
    g = train_settings()
    configure(g, argv=[str(ROOT / 'config' / f'{name}.py')])
    vocab, params = CONFIGS[name]
    fields = {k: g[k] for k in GPTConfig().to_dict() if k != 'vocab_size'}
    with torch.device('meta'):  # shapes only: no memory, no time
        model = GPT(GPTConfig(vocab_size=vocab, **fields))
    assert model.num_params() == pytest.approx(params, rel=0.02)
    if name in ('train_tinystories', 'seed002'):  # their comments promise torchrun on 1, 2, 4 or 8 GPUs
        assert g['gradient_accumulation_steps'] % 8 == 0
