"""Shared fixtures: the local data, and a tiny dataset and checkpoint made by the real
prepare.py and train.py, built once per test session and reused by later stages' tests."""
import contextlib
import gc
import io
import os
import random
import runpy
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get('SHARED_DATA', ROOT.parent / 'shared' / 'data'))

# Two cores in CI: one torch thread per process keeps parallel subprocesses from thrashing.
torch.set_num_threads(1)


def run_script(script, *args, timeout=300, check=True, env=None):
    """Run a top-level script as a user would; return the CompletedProcess (stdout+stderr as text)."""
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'WANDB_MODE': 'offline', **(env or {})}
    p = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f'{script} {" ".join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}')
    return p


@pytest.fixture(scope='session')
def shared_data():
    if not (SHARED_DATA / 'tinystories').is_dir():
        pytest.skip(f'shared data not found at {SHARED_DATA}; set SHARED_DATA')
    return SHARED_DATA


@pytest.fixture(scope='session')
def tiny_data(shared_data, tmp_path_factory):
    """A small BPE-512 dataset: ~400 KB of real TinyStories train text, the validation head as val."""
    out = tmp_path_factory.mktemp('tiny_data')
    text = (shared_data / 'tinystories' / 'train-v1-head.txt').read_text()
    cut = text.index('<|endoftext|>', 400_000) + len('<|endoftext|>\n')
    (out / 'train.txt').write_text(text[:cut])
    val = (shared_data / 'tinystories' / 'validation-head.txt').read_text()[:60_000]
    (out / 'val.txt').write_text(val)
    import prepare  # its main(argv) is the script; importing it runs nothing
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        prepare.main([f'--source={out / "train.txt"}', f'--val_source={out / "val.txt"}', '--tokenizer=bpe',
                      '--vocab_size=512', f'--out_dir={out}'])
    return out


@pytest.fixture(scope='session')
def tiny_ckpt(tiny_data, tmp_path_factory):
    """out_dir of a tiny model trained for 40 iterations on tiny_data (last.pt, best.pt, metrics.jsonl)."""
    out = tmp_path_factory.mktemp('tiny_ckpt')
    code, _, err = run_in_process('train.py', f'--data_dir={tiny_data}', f'--out_dir={out}', '--device=cpu',
                                  '--compile=False', '--dtype=float32', '--n_layer=2', '--n_head=2', '--n_embd=32',
                                  '--block_size=64', '--batch_size=8', '--gradient_accumulation_steps=1',
                                  '--max_iters=40', '--eval_interval=20', '--eval_iters=2', '--log_interval=10',
                                  '--warmup_iters=5', '--learning_rate=3e-3', '--lr_decay_iters=40')
    assert code == 0, err
    return out


def run_in_process(script, *args):
    """Run a top-level script in this process as `python script args` runs -> (exit status, stdout, stderr). No
    second Python and torch to start; a failure goes through the exception hook configure() installs, as in a real
    process. The script's argv, signal handlers, random state and exception hook end with the call."""
    argv, hook = sys.argv, sys.excepthook
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    states = random.getstate(), np.random.get_state()
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [script, *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), torch.random.fork_rng(devices=[]):
            try:
                runpy.run_path(str(ROOT / script), run_name='__main__')
            except SystemExit as e:  # as the interpreter does: a str is printed and exits 1
                code = 1 if isinstance(e.code, str) else (e.code or 0)
                if isinstance(e.code, str):
                    print(e.code, file=sys.stderr)
            except BaseException as e:  # KeyboardInterrupt included, as in a real process
                sys.excepthook(type(e), e, e.__traceback__)
                code = 130 if isinstance(e, KeyboardInterrupt) else 1
    finally:
        sys.argv, sys.excepthook = argv, hook
        for s, h in handlers.items():
            signal.signal(s, h)
        random.setstate(states[0])
        np.random.set_state(states[1])
        gc.collect()  # the script's globals go, and with them anything it holds open (train.py's lock on out_dir)
    return code, out.getvalue(), err.getvalue()


def run_here(monkeypatch, capsys, script, *args):
    """run_in_process -> (exit status, what the script printed on stderr)."""
    code, out, err = run_in_process(script, *args)
    print(out, end='')
    return code, err


def one_line(code, err):
    """A refusal as promised: a non-zero exit status and one line on stderr, no traceback -> that line."""
    assert code not in (0, None) and 'Traceback' not in err and len(err.strip().splitlines()) == 1, (code, err)
    return err.strip()
