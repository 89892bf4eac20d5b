"""train.py, run as a user runs it (on the tiny real dataset): it learns, stops after exactly max_iters steps (or
a time budget, or at a target loss), resumes bit-for-bit with either optimizer, splits data correctly under DDP,
never loses or mixes up a run directory, and fails in one clear line. Runs that only need train.py's outcome run
in this process (no second torch import); the ones about processes (signals, locks, torchrun) start real ones."""
import ast
import errno
import glob
import hashlib
import io
import json
import math
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import rundir
from conftest import ROOT, one_line, run_here, run_in_process, run_script

sys.path.insert(0, str(ROOT))
from model import GPT  # noqa: E402

# a model small enough that a step takes milliseconds on one CPU thread
TINY = ['--device=cpu', '--compile=False', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32',
        '--block_size=64', '--eval_iters=4', '--log_interval=1', '--wandb_log=False']
SMALL = ['--batch_size=8', '--gradient_accumulation_steps=1']  # 512 tokens per step


def train(data, out, *args):
    """train.py run in this process, as a user runs it -> its stdout; it must succeed."""
    code, stdout, stderr = run_in_process('train.py', f'--data_dir={data}', f'--out_dir={out}', *TINY, *args)
    assert code == 0, stdout + stderr
    return stdout


def train_here(monkeypatch, capsys, data, out, *args):
    """train.py run in this process -> (exit status, stderr); see conftest.run_here."""
    return run_here(monkeypatch, capsys, 'train.py', f'--data_dir={data}', f'--out_dir={out}', *TINY, *args)


def records(out, kind):
    return [r for r in rundir.read_metrics(os.path.join(out, 'metrics.jsonl')) if r['kind'] == kind]


def sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


def snapshot(directory):
    """Every file in directory (the lock file aside: each run rewrites it) -> its hash."""
    return {p.name: sha(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != '.lock'}


def copy_run(run, to):
    shutil.copytree(run, to)
    return to


def mount(path, options):
    """A tmpfs at path (needs root); skips the test where mounting is not allowed."""
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)], capture_output=True).returncode:
        pytest.skip('cannot mount a tmpfs here')


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
    assert {int(s['step']) for s in ckpt['optimizer'][0]['state'].values()} == {20}
    lr = {r['iter']: r['lr'] for r in steps}  # linear warmup to the peak at step 2, cosine down to min_lr at 20
    assert lr[1] == pytest.approx(1.5e-3) and lr[2] == pytest.approx(3e-3) and lr[20] == pytest.approx(3e-4)
    assert all(lr[i] > lr[i + 1] for i in range(2, 20))


def test_every_record_carries_the_training_time_and_a_finished_run_ends_with_done(short_run):
    """'time' counts training only: it starts at 0, grows with every step, stands still across an evaluation
    and its checkpoint, and the 'done' record closing a run that reached max_iters repeats the last one."""
    log = rundir.read_metrics(short_run / 'metrics.jsonl')
    assert log[0]['kind'] == 'eval' and log[0]['time'] == 0.0
    times = [r['time'] for r in log]
    assert all(a <= b for a, b in zip(times, times[1:]))
    steps = [r['time'] for r in log if r['kind'] == 'train']
    assert all(a < b for a, b in zip(steps, steps[1:]))
    assert log[-1] == {'kind': 'done', 'iter': 20, 'tokens': 20 * 8 * 64, 'time': log[-2]['time'],
                       'reason': 'max_iters'}
    assert torch.load(short_run / 'last.pt', weights_only=True)['train_time'] == log[-1]['time']


def test_checkpoints_load_safely_and_best_holds_the_lowest_val_loss(short_run, tiny_data):
    contract = {'model', 'model_args', 'optimizer', 'scaler', 'iter_num', 'best_val_loss', 'train_time', 'config',
                'tokenizer', 'meta', 'rng', 'sampler', 'version'}
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


@pytest.mark.parametrize('optimizer', ['adamw', 'muon'])
def test_resume_reproduces_an_uninterrupted_run(optimizer, tiny_data, tmp_path):
    """Stop at 6 (max_iters=6), resume to 12: the same losses as a straight 12-step run, with dropout on, so the
    RNG states, the data sampler, the optimizers (AdamW, or Muon and AdamW) and the schedule all have to come
    back exactly."""
    args = ['--batch_size=4', '--gradient_accumulation_steps=2', '--dropout=0.1', '--eval_interval=4',
            '--learning_rate=3e-3', '--warmup_iters=2', '--lr_decay_iters=12', f'--optimizer={optimizer}']
    train(tiny_data, tmp_path / 'straight', '--max_iters=12', *args)
    train(tiny_data, tmp_path / 'split', '--max_iters=6', *args)
    train(tiny_data, tmp_path / 'split', '--max_iters=12', '--init_from=resume', *args)
    a, b = records(tmp_path / 'straight', 'train'), records(tmp_path / 'split', 'train')
    assert [r['iter'] for r in b] == list(range(1, 13))
    assert all(x['time'] < y['time'] for x, y in zip(b, b[1:]))  # the resumed run's clock starts where it stopped
    assert [r['iter'] for r in records(tmp_path / 'split', 'done')] == [12]  # the first run's end is no longer one
    for ra, rb in zip(a, b):
        assert abs(ra['loss'] - rb['loss']) < 1e-6 and ra['lr'] == rb['lr'], (ra, rb)
    ea = {r['iter']: r['val_loss'] for r in records(tmp_path / 'straight', 'eval')}
    eb = {r['iter']: r['val_loss'] for r in records(tmp_path / 'split', 'eval')}
    assert abs(ea[12] - eb[12]) < 1e-6 and abs(ea[8] - eb[8]) < 1e-6
    ca, cb = (torch.load(tmp_path / run / 'last.pt', weights_only=True) for run in ('straight', 'split'))
    assert all(torch.allclose(ca['model'][k], cb['model'][k], rtol=0, atol=1e-6) for k in ca['model'])
    assert len(cb['optimizer']) == {'adamw': 1, 'muon': 2}[optimizer]


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
    rank accumulates 2 micro-steps and exercises both the no_sync and the synchronising backward). With Muon,
    so both optimizers are stepped: Muon the blocks' matrices, AdamW the embeddings and norms."""
    args = ['--batch_size=4', '--gradient_accumulation_steps=4', '--max_iters=5', '--eval_interval=5',
            '--learning_rate=3e-3', '--warmup_iters=2', '--optimizer=muon']
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


def test_time_budget_ends_the_run_and_a_resume_continues_the_spent_budget(tiny_data, tmp_path):
    """time_budget=1.5: the run ends by itself (far before max_iters) once 1.5 s of training are spent, evaluates
    and saves there; a resume with the same budget finds it spent and takes no step."""
    args = ['--batch_size=4', '--max_iters=1000000', '--eval_interval=1000000', '--time_budget=1.5',
            '--warmup_iters=2', '--learning_rate=3e-3', '--min_lr=3e-4', '--optimizer=muon']
    p = train(tiny_data, tmp_path, *args)
    ckpt = torch.load(tmp_path / 'last.pt', weights_only=True)
    steps, evals = records(tmp_path, 'train'), records(tmp_path, 'eval')
    assert 1 < ckpt['iter_num'] == steps[-1]['iter'] == evals[-1]['iter'] < 1000000
    assert ckpt['train_time'] >= 1.5 and evals[-1]['time'] == ckpt['train_time']
    assert 'time budget' in p
    lrs = [r['lr'] for r in steps[2:]]  # after warmup the cosine runs on the time spent: falling, never below min_lr
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] >= 3e-4
    train(tiny_data, tmp_path, *args, '--init_from=resume')
    assert len(records(tmp_path, 'train')) == len(steps)
    assert torch.load(tmp_path / 'last.pt', weights_only=True)['train_time'] == ckpt['train_time']


def test_target_val_loss_is_recorded_once_at_the_first_evaluation_reaching_it(short_run, tiny_data, tmp_path):
    """A target between the val losses at iterations 0 and 10 of short_run: one 'target' record, at iteration 10,
    with the training time and tokens rundir.time_to_target interpolates between evaluations 0 and 10 (iteration
    20 is below it too, and is not recorded); with stop_at_target the run ends there, checkpointed."""
    evals = {r['iter']: r['val_loss'] for r in records(short_run, 'eval')}
    target = (evals[0] + evals[10]) / 2
    args = ['--max_iters=20', '--eval_interval=10', '--batch_size=8', '--gradient_accumulation_steps=1',
            '--learning_rate=3e-3', '--warmup_iters=2', '--min_lr=3e-4', f'--target_val_loss={target}']
    p = train(tiny_data, tmp_path / 'go_on', *args)
    [hit] = records(tmp_path / 'go_on', 'target')
    at10 = records(tmp_path / 'go_on', 'eval')[1]
    assert hit['iter'] == 10 and hit['tokens'] == pytest.approx(5 * 8 * 64) and hit['target_val_loss'] == target
    assert hit['time'] == pytest.approx(at10['time'] / 2) and at10['time'] > 0  # halfway, as the loss is
    assert 'target val loss' in p and records(tmp_path / 'go_on', 'train')[-1]['iter'] == 20
    train(tiny_data, tmp_path / 'stop', *args, '--stop_at_target=True')
    assert [r['iter'] for r in records(tmp_path / 'stop', 'target')] == [10]
    assert records(tmp_path / 'stop', 'train')[-1]['iter'] == 10
    assert torch.load(tmp_path / 'stop' / 'last.pt', weights_only=True)['iter_num'] == 10


def test_nonfinite_loss_stops_with_a_message_logs_it_and_keeps_the_last_checkpoint(short_run, tiny_data, tmp_path,
                                                                                 monkeypatch, capsys):
    out = copy_run(short_run, tmp_path / 'run')
    before = {name: sha(out / name) for name in ('last.pt', 'best.pt')}
    line = one_line(*train_here(monkeypatch, capsys, tiny_data, out, '--init_from=resume', '--max_iters=60',
                                '--eval_interval=10', '--batch_size=8', '--gradient_accumulation_steps=1',
                                '--learning_rate=1e30', '--warmup_iters=0'))
    assert 'the loss is' in line and 'last.pt still holds iteration 20' in line
    assert {name: sha(out / name) for name in before} == before
    last = rundir.read_metrics(out / 'metrics.jsonl')[-1]
    assert last['kind'] == 'diverged' and last['iter'] > 20 and last['tokens'] == last['iter'] * 8 * 64
    assert not math.isfinite(last['loss']) and last['time'] > 0


@pytest.fixture(scope='module')
def vaswani_wandb_run(tiny_data, tmp_path_factory):
    """out_dir of an 8-step run with the Vaswani schedule (warmup 4) and wandb logging in offline mode."""
    out = tmp_path_factory.mktemp('wandb_run')
    run_script('train.py', f'--data_dir={tiny_data}', f'--out_dir={out}', *TINY, '--max_iters=8', '--eval_interval=4',
               '--batch_size=4', '--lr_schedule=vaswani', '--warmup_iters=4', '--learning_rate=1e-3', '--wandb_log=True',
               '--wandb_run_name=offline-test', env={'WANDB_MODE': 'offline'})  # its own process: wandb's service
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


def damage(run, case):
    """Damage the run directory run the way case says; return the words the refusal must contain."""
    ckpt = torch.load(run / 'last.pt', weights_only=True)
    if case == 'damaged checkpoint':  # e.g. a copy cut short
        (run / 'last.pt').write_bytes((run / 'last.pt').read_bytes()[:5000])
        return 'cannot resume'
    if case == 'damaged metrics line':  # a line in the middle, so not one a crash cut short
        lines = (run / 'metrics.jsonl').read_text().splitlines(keepends=True)
        (run / 'metrics.jsonl').write_text(''.join(lines[:3] + ['{"kind": "train", "it\n'] + lines[3:]))
        return 'metrics.jsonl line 4 is damaged'
    if case in ('model_args null', 'model_args a list'):
        ckpt['model_args'] = None if case == 'model_args null' else [1, 2]
        torch.save(ckpt, run / 'last.pt')
        return 'cannot resume'
    ckpt['model_args']['n_embd'] = 64  # model_args edited: the weights are 32 wide
    torch.save(ckpt, run / 'last.pt')
    return 'does not fit its model_args'


@pytest.mark.parametrize('case', ['damaged checkpoint', 'damaged metrics line', 'model_args null', 'model_args a list',
                                  'model_args mismatch', 'vocab mismatch'])
def test_a_resume_from_a_damaged_run_is_one_line_and_changes_nothing(case, short_run, tiny_data, tmp_path,
                                                                      monkeypatch, capsys):
    run, data = copy_run(short_run, tmp_path / 'run'), tiny_data
    if case == 'vocab mismatch':  # data prepared with another vocabulary than the checkpoint's model
        data = copy_run(tiny_data, tmp_path / 'other_data')
        meta = json.loads((data / 'meta.json').read_text())
        meta['vocab_size'] += 256
        (data / 'meta.json').write_text(json.dumps(meta))
        expect = 'tokenized differently'
    else:
        expect = damage(run, case)
    before = snapshot(run)
    line = one_line(*train_here(monkeypatch, capsys, data, run, '--init_from=resume', '--max_iters=30'))
    assert expect in line, line
    assert '--overwrite=True' in line or case == 'damaged metrics line', line  # that one: delete the line
    assert snapshot(run) == before


def test_a_line_cut_short_at_the_end_of_the_metrics_is_dropped_on_resume(short_run, tiny_data, tmp_path,
                                                                          monkeypatch, capsys):
    """The last line a crash cut short is not damage but an unfinished record: resume drops it and carries on."""
    run = copy_run(short_run, tmp_path / 'run')
    with open(run / 'metrics.jsonl', 'a') as f:
        f.write('{"kind": "train", "iter": 21, "lo')
    assert train_here(monkeypatch, capsys, tiny_data, run, '--init_from=resume', '--max_iters=21', *SMALL) == (0, '')
    assert [r['iter'] for r in records(run, 'train')][-2:] == [20, 21]


@pytest.mark.parametrize('args,words', [
    (['--learning_rate=-1'], 'learning_rate=-1.0 must be above 0'), (['--learning_rate=0'], 'above 0'),
    (['--beta1=1.5'], 'beta1=1.5 must be in [0, 1)'), (['--beta2=-0.1'], 'beta2=-0.1 must be in [0, 1)'),
    (['--weight_decay=-0.1'], 'weight_decay=-0.1 must be at least 0'), (['--grad_clip=-1'], 'grad_clip=-1.0'),
    (['--min_lr=0.1'], 'min_lr=0.1 must be in [0, learning_rate=0.001]'),
    (['--warmup_iters=20', '--lr_decay_iters=10'], 'lr_decay_iters=10 must be at least warmup_iters=20'),
    (['--seed=-1'], 'seed=-1 must be in [0, 2**32 - 1]'), (['--seed=99999999999999999999'], 'seed=9999'),
    (['--dtype=float64'], "dtype='float64'"), (['--init_from=resum'], "init_from='resum'"),
    (['--batch_size=0'], 'batch_size=0 must be at least 1'), (['--device=tpu'], "device 'tpu'"),
    (['--block_size=100000000'], 'too few for block_size'), (['--data_dir=/nowhere'], 'prepare.py'),
    (['--dropout=1.5'], 'dropout'), (['--n_head=5'], 'n_embd=32 is not divisible by n_head=5'),
    (['--optimizer=sgd'], "optimizer='sgd' is not known"), (['--muon_momentum=1'], 'muon_momentum=1.0 must be'),
    (['--muon_lr=0'], 'muon_lr=0.0 must be above 0'), (['--time_budget=-5'], 'time_budget=-5.0 must be at least 0'),
    (['--logit_softcap=-1'], 'logit_softcap=-1.0 must not be negative'), (['--act=relu3'], "act='relu3'"),
])
def test_bad_settings_are_one_line_before_anything_is_written(args, words, tiny_data, tmp_path, monkeypatch, capsys):
    line = one_line(*train_here(monkeypatch, capsys, tiny_data, tmp_path / 'run', *args))
    assert words in line, line
    assert not (tmp_path / 'run').exists()


def test_token_ids_past_the_vocabulary_are_refused_at_startup(tiny_data, tmp_path, monkeypatch, capsys):
    """meta.json promising fewer tokens than the .bin files use: one line, not an IndexError inside the model."""
    data = copy_run(tiny_data, tmp_path / 'data')
    meta = json.loads((data / 'meta.json').read_text())
    meta['vocab_size'], meta['eot_id'] = 256, 255  # a consistent meta.json, but the files hold ids up to 511
    (data / 'meta.json').write_text(json.dumps(meta))
    line = one_line(*train_here(monkeypatch, capsys, data, tmp_path / 'run'))
    assert re.search(r'train.bin holds token id \d+, past vocab_size=256', line), line
    assert not (tmp_path / 'run').exists()


def test_a_fresh_run_refuses_an_out_dir_holding_a_run_and_changes_nothing(short_run, tiny_data, tmp_path,
                                                                           monkeypatch, capsys):
    run = copy_run(short_run, tmp_path / 'run')
    before = snapshot(run)
    line = one_line(*train_here(monkeypatch, capsys, tiny_data, run, '--max_iters=2'))
    assert f'{run} already holds a run (last.pt, best.pt, metrics.jsonl)' in line
    assert '--init_from=resume' in line and '--overwrite=True' in line and '--out_dir' in line
    assert snapshot(run) == before


def test_overwrite_replaces_the_old_run_and_a_directory_without_one_needs_no_flag(short_run, tiny_data, tmp_path,
                                                                                   monkeypatch, capsys):
    run = copy_run(short_run, tmp_path / 'run')
    assert train_here(monkeypatch, capsys, tiny_data, run, '--overwrite=True', '--max_iters=2', '--eval_interval=2',
                      *SMALL) == (0, '')
    assert [r['iter'] for r in rundir.read_metrics(run / 'metrics.jsonl')] == [0, 1, 2, 2, 2]  # the new run's only
    assert {torch.load(run / name, weights_only=True)['iter_num'] for name in ('last.pt', 'best.pt')} == {2}
    other = tmp_path / 'other'  # files that are not a run's: nothing to protect
    other.mkdir()
    (other / 'notes.txt').write_text('mine')
    (other / 'metrics.jsonl').write_text('')
    assert train_here(monkeypatch, capsys, tiny_data, other, '--max_iters=1', *SMALL) == (0, '')
    assert (other / 'notes.txt').read_text() == 'mine' and (other / 'last.pt').exists()


def test_eval_only_writes_nothing(short_run, tiny_data, tmp_path, monkeypatch, capsys):
    run = copy_run(short_run, tmp_path / 'run')
    before = {p.name: sha(p) for p in run.iterdir()}
    assert train_here(monkeypatch, capsys, tiny_data, run, '--init_from=resume', '--eval_only=True', *SMALL) == (0, '')
    assert {p.name: sha(p) for p in run.iterdir()} == before


def test_a_dry_run_describes_the_run_and_writes_nothing(short_run, tiny_data, tmp_path, monkeypatch, capsys):
    run = copy_run(short_run, tmp_path / 'run')
    before = {p.name: sha(p) for p in run.iterdir()}
    monkeypatch.setattr(sys, 'stdout', io.StringIO())
    # a fresh run into a directory holding one would be refused; a dry run only describes what it would train
    assert train_here(monkeypatch, capsys, tiny_data, run, '--dry_run=True', *SMALL, '--n_layer=3') == (0, '')
    described = json.loads(sys.stdout.getvalue().splitlines()[-1])
    assert described['config']['n_layer'] == 3 and described['tokens_per_iter'] == 8 * 64
    assert described['params'] > 0 and described['flops_per_token'] > 6 * described['params'] - 1
    assert {p.name: sha(p) for p in run.iterdir()} == before
    assert 'n_layr' in one_line(*train_here(monkeypatch, capsys, tiny_data, tmp_path / 'new', '--dry_run=True',
                                            '--n_layr=3'))
    assert not (tmp_path / 'new').exists()


@pytest.mark.parametrize('case', ['a file', 'read-only'])
def test_an_out_dir_that_cannot_be_written_is_one_line(case, tiny_data, tmp_path, monkeypatch, capsys):
    out = tmp_path / 'out'
    if case == 'a file':
        out.write_text('not a directory')
        expect = f'a file is in the way ({out})'
    else:
        out.mkdir()
        if os.geteuid() == 0:  # root writes anywhere: only a read-only mount says no
            mount(out, 'ro,size=64k')
        else:
            out.chmod(0o555)
        expect = 'read-only' if os.geteuid() == 0 else 'permission denied'
    try:
        line = one_line(*train_here(monkeypatch, capsys, tiny_data, out))
        assert expect in line, line
    finally:
        if case == 'read-only' and os.geteuid() == 0:
            subprocess.run(['umount', str(out)])


# config -> (vocab of the data its comment prepares, parameters its seed states or implies)
CONFIGS = {'train_tinystories': (4096, 27.0e6), 'train_tinystories_cpu': (4096, 1.80e6),
           'seed000': (8000, 1.85e6), 'seed001': (10000, 23e6), 'seed002': (50257, 124e6),
           'seed003': (50257, 34.1e6), 'seed004': (32000, 45.2e6)}


@pytest.mark.parametrize('name', CONFIGS)
def test_each_config_builds_the_model_its_comment_describes(name, monkeypatch, capsys):
    """train.py CONFIG --help lists the settings the config makes (an unknown key in it would be an error)."""
    from model import GPTConfig
    monkeypatch.setattr(sys, 'argv', ['train.py', str(ROOT / 'config' / f'{name}.py'), '--help'])
    monkeypatch.setattr(sys, 'excepthook', sys.excepthook)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / 'train.py'), run_name='__main__')
    assert e.value.code == 0
    g = {k: ast.literal_eval(v) for k, v in re.findall(r'^  --(\w+)=(.*)$', capsys.readouterr().out, re.M)
         if k != 'debug'}
    vocab, params = CONFIGS[name]
    fields = {k: g[k] for k in GPTConfig().to_dict() if k != 'vocab_size'}
    with torch.device('meta'):  # shapes only: no memory, no time
        model = GPT(GPTConfig(vocab_size=vocab, **fields))
    assert model.num_params() == pytest.approx(params, rel=0.02)
    if name in ('train_tinystories', 'seed002'):  # their comments promise torchrun on 1, 2, 4 or 8 GPUs
        assert g['gradient_accumulation_steps'] % 8 == 0


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(short_run, tiny_data, tmp_path,
                                                                                monkeypatch, capsys):
    """A real full disk (a tmpfs with room for the run but not for one more checkpoint) where root may mount one,
    else a write that fails as a full disk does."""
    small = tmp_path / 'small'
    small.mkdir()
    room = sum(p.stat().st_size for p in short_run.iterdir()) + 200_000  # a checkpoint is ~480 KB
    real = os.geteuid() == 0 and not subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={room}', 'tmpfs',
                                                     str(small)], capture_output=True).returncode
    if not real:
        def full(obj, f, *args, **kwargs):
            f.write(b'half a checkpoint')
            raise OSError(errno.ENOSPC, 'No space left on device')
        monkeypatch.setattr(torch, 'save', full)
    try:
        run = copy_run(short_run, small / 'run')
        before = {name: sha(run / name) for name in ('last.pt', 'best.pt')}
        line = one_line(*train_here(monkeypatch, capsys, tiny_data, run, '--init_from=resume', '--max_iters=30',
                                    '--eval_interval=10', *SMALL))
        assert re.search(rf'the disk is full \({run}/(best|last).pt\): .*; the previous (best|last).pt is intact, '
                         'continue from iteration 20 with --init_from=resume$', line), line
        assert {name: sha(run / name) for name in before} == before
        assert not [p.name for p in run.iterdir() if '.tmp' in p.name]
    finally:
        if real:
            subprocess.run(['umount', str(small)])


def test_wandb_without_a_login_is_one_line_before_any_file_is_touched(short_run, tiny_data, tmp_path, monkeypatch,
                                                                      capsys):
    pytest.importorskip('wandb')
    for name in ('WANDB_MODE', 'WANDB_API_KEY', 'WANDB_DISABLED'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))  # no ~/.netrc, no saved login
    monkeypatch.setenv('WANDB_CONFIG_DIR', str(tmp_path / 'wandb-config'))
    run = copy_run(short_run, tmp_path / 'run')
    before = snapshot(run)
    line = one_line(*train_here(monkeypatch, capsys, tiny_data, run, '--init_from=resume', '--max_iters=30',
                                '--wandb_log=True'))
    assert 'wandb' in line and 'wandb login' in line and 'WANDB_MODE=offline' in line, line
    assert snapshot(run) == before and not (run / 'wandb').exists()


@pytest.fixture(scope='module')
def live_run(tiny_data, tmp_path_factory):
    """A train.py process training in its out_dir, with a checkpoint written: (process, out_dir). It is stopped
    (SIGSTOP): it holds out_dir without taking a core from the tests."""
    out = tmp_path_factory.mktemp('live')
    cmd = [sys.executable, str(ROOT / 'train.py'), f'--data_dir={tiny_data}', f'--out_dir={out}', *TINY,
           '--batch_size=2', '--gradient_accumulation_steps=16', '--max_iters=1000000', '--eval_interval=2',
           '--eval_iters=1']
    p = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1'}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / 'last.pt').exists():
            assert p.poll() is None and time.time() < deadline, 'train.py did not start training'
            time.sleep(0.1)
        p.send_signal(signal.SIGSTOP)
        yield p, out
    finally:
        p.kill()
        p.wait()


def test_a_second_run_on_a_busy_out_dir_is_refused_naming_the_first(live_run, tiny_data, monkeypatch, capsys):
    p, out = live_run
    line = one_line(*train_here(monkeypatch, capsys, tiny_data, out, '--overwrite=True'))  # the most dangerous one
    assert f'{out} is in use by process {p.pid}' in line and 'train.py' in line, line
    assert p.poll() is None  # the first run is still there


def test_under_torchrun_a_refusal_is_printed_once_and_every_process_exits(live_run, tiny_data):
    """Rank 0 cannot take out_dir; rank 1, which needs nothing from out_dir, must not wait for it forever."""
    _, out = live_run
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(ROOT / 'train.py'),
           f'--data_dir={tiny_data}', f'--out_dir={out}', *TINY, '--batch_size=4', '--gradient_accumulation_steps=2']
    p = subprocess.run(cmd, cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True, text=True,
                       timeout=240)
    assert p.returncode != 0  # torchrun then prints its own summary of the failed workers
    assert p.stderr.count('is in use by process') == 1, p.stderr


def test_a_second_stop_signal_stops_at_once_in_one_line_and_keeps_last_pt(live_run):
    """Ctrl-C pressed twice. Two pending SIGINTs merge into one, so the second press is a SIGTERM, both sent while
    the process is stopped: on waking it handles SIGINT (finish the step, then save), then SIGTERM (stop now)."""
    p, out = live_run  # stopped
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGTERM)
    p.send_signal(signal.SIGCONT)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 130
    line = one_line(p.returncode, err)
    held = re.fullmatch(rf"stopped at once without saving; {out}/last.pt holds iteration (\d+)", line)
    assert held, line
    held = int(held[1])
    assert torch.load(out / 'last.pt', weights_only=True)['iter_num'] == held > 0
    assert not [q.name for q in out.iterdir() if '.tmp' in q.name]
