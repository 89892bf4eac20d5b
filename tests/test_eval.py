"""eval.py: the sliding-window evaluation scores every token of a split exactly once, with the context
it promises, and equals a straightforward token-by-token recompute; an untrained model scores like a
uniform guess; the script writes the figures as JSON and refuses bad input with one line."""
import json
import math
import os
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from conftest import ROOT, one_line, run_here, run_script

sys.path.insert(0, str(ROOT))
from eval import evaluate, token_logprobs, windows  # noqa: E402


def load(ckpt_dir):
    from model import GPT
    model, ckpt = GPT.from_checkpoint(str(ckpt_dir / 'best.pt'), device='cpu')
    return model.eval(), ckpt


def split(data_dir, name='val'):
    meta = json.loads((data_dir / 'meta.json').read_text())
    return np.fromfile(data_dir / f'{name}.bin', dtype=meta['dtype']), meta


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 400), block_size=st.integers(1, 64), data=st.data())
def test_windows_score_each_prediction_once_with_the_promised_context(n, block_size, data):
    stride = data.draw(st.integers(1, block_size))
    ends, scored, width = windows(n, block_size, stride)
    targets = []  # token indices predicted, with the context (tokens before them in their window) each gets
    for e, k in zip(ends, scored):
        start = e - width
        assert 0 <= start and e <= n - 1 and 1 <= k <= width
        targets += [(j, j - start) for j in range(e - k + 1, e + 1)]
    assert [j for j, _ in targets] == list(range(1, n))  # every token after the first, once, in order
    for j, context in targets:
        assert min(j, width - stride + 1) <= context <= width


@pytest.mark.parametrize('stride', [1, 7, 32, 64])
def test_evaluate_equals_token_by_token_recompute(tiny_ckpt, tiny_data, stride):
    """Each token j is predicted from everything since its window's start: token by token, that is
    tokens[0:j] within the first block, else tokens[e - T : j] where e, the window's last target, is the
    first of T, T + stride, T + 2 stride, ... at or after j (capped at the last token)."""
    model, ckpt = load(tiny_ckpt)
    T = ckpt['model_args']['block_size']
    tokens = split(tiny_data)[0][:150]
    got = evaluate(model, tokens, T, stride, batch_size=5, device='cpu')
    nll = 0.0
    with torch.no_grad():
        for j in range(1, len(tokens)):
            e = j if j <= T else min(T + math.ceil((j - T) / stride) * stride, len(tokens) - 1)
            context = torch.from_numpy(tokens[max(e - T, 0):j].astype(np.int64))[None]
            logits, _ = model(context)  # without targets: the logits of the last position only
            nll -= F.log_softmax(logits[0, -1].float(), -1)[tokens[j]].item()
    assert got['tokens'] == len(tokens) - 1
    assert got['loss'] == pytest.approx(nll / (len(tokens) - 1), rel=1e-5)
    assert got['ppl'] == pytest.approx(math.exp(got['loss']))



@pytest.mark.parametrize('n', [30, 150])
def test_token_logprobs_are_evaluates_predictions_one_by_one(tiny_ckpt, tiny_data, n):
    """token_logprobs gives one log-probability per predicted token, from the same windows as evaluate at stride
    block_size // 2, so minus their sum is evaluate's summed loss, within a block (30 tokens) and past it (150)."""
    model, ckpt = load(tiny_ckpt)
    T = ckpt['model_args']['block_size']
    tokens = split(tiny_data)[0][:n]
    lp = token_logprobs(model, tokens.astype(np.int64).tolist())
    assert lp.shape == (n - 1,) and bool((lp <= 0).all())
    want = evaluate(model, tokens, T, T // 2, batch_size=4, device='cpu')
    assert -lp.sum().item() == pytest.approx(want['loss'] * want['tokens'], rel=1e-5)

def test_split_shorter_than_a_block_is_one_full_forward(tiny_ckpt, tiny_data):
    model, ckpt = load(tiny_ckpt)
    tokens = split(tiny_data)[0][:30]  # shorter than block_size (64)
    x = torch.from_numpy(tokens.astype(np.int64))[None]
    with torch.no_grad():
        logits, _ = model(x[:, :-1], x[:, 1:])
    want = F.cross_entropy(logits[0].float(), x[0, 1:]).item()
    for stride in (1, 64):
        got = evaluate(model, tokens, 64, stride, batch_size=8, device='cpu')
        assert got['loss'] == pytest.approx(want, rel=1e-5) and got['windows'] == 1


def test_untrained_model_perplexity_is_near_the_vocabulary_size(tiny_ckpt, tiny_data):
    """Small random weights give near-uniform predictions: perplexity ~ vocab size, ~log2(V) bits per
    token; every one of the split's tokens but the first is scored, and bits/byte follows from the bytes."""
    from model import GPT, GPTConfig
    config = GPTConfig.from_dict(load(tiny_ckpt)[1]['model_args'])
    torch.manual_seed(0)
    tokens, meta = split(tiny_data)
    got = evaluate(GPT(config), tokens, config.block_size, config.block_size, 64, 'cpu',
                   n_bytes=meta['splits']['val']['bytes'])
    assert 0.9 < got['ppl'] / config.vocab_size < 1.15
    assert got['tokens'] == len(tokens) - 1 == meta['splits']['val']['tokens'] - 1
    assert got['bpb'] == pytest.approx(got['loss'] * got['tokens'] / meta['splits']['val']['bytes'] / math.log(2))


def test_script_writes_json_matching_evaluate_and_beats_the_untrained_baseline(tiny_ckpt, tiny_data, tmp_path):
    p = run_script('eval.py', f'--out_dir={tmp_path}', f'--ckpt={tiny_ckpt / "best.pt"}', '--stride=32',
                   '--baseline=True', '--device=cpu', '--dtype=float32')
    assert 'ppl' in p.stdout and 'bits/byte' in p.stdout
    report = json.loads((tmp_path / 'eval.json').read_text())
    assert os.listdir(tmp_path) == ['eval.json']  # written atomically: no temporary file left behind
    tokens, meta = split(tiny_data)  # data_dir '' means the checkpoint's own data
    model, ckpt = load(tiny_ckpt)
    want = evaluate(model, tokens, 64, 32, 16, 'cpu', n_bytes=meta['splits']['val']['bytes'])
    assert report['loss'] == pytest.approx(want['loss'], rel=1e-6)
    assert report['tokens'] == meta['splits']['val']['tokens'] - 1 and report['bytes'] == meta['splits']['val']['bytes']
    assert report['split'] == 'val' and report['stride'] == 32 and report['iter_num'] == ckpt['iter_num']
    assert report['baseline']['loss'] > report['loss'] + 0.5  # 40 iterations already learn a lot
    assert 0.9 < report['baseline']['ppl'] / report['vocab_size'] < 1.15


def test_evaluate_raises_exceptions_a_caller_can_catch(tiny_ckpt, tiny_data):
    """evaluate() is a library function: bad arguments are ValueErrors, never an exit of the caller's program."""
    model, _ = load(tiny_ckpt)
    tokens = split(tiny_data)[0][:100]
    for args, words in [((tokens[:1], 64, 32, 8), 'at least 2'), ((tokens, 64, 0, 8), 'stride'),
                        ((tokens, 64, 65, 8), 'stride'), ((tokens, 64, 32, 0), 'batch_size')]:
        with pytest.raises(ValueError, match=words):
            evaluate(model, *args, device='cpu')
    with pytest.raises(ValueError, match='dtype'):
        evaluate(model, tokens, 64, 32, 8, 'cpu', dtype='float64')


def error(monkeypatch, capsys, *args):
    """The one line eval.py prints on stderr, and nothing else, when it refuses these args."""
    return one_line(*run_here(monkeypatch, capsys, 'eval.py', '--device=cpu', '--dtype=float32', *args))


def test_bad_input_exits_with_one_line_naming_the_problem(monkeypatch, capsys, tiny_ckpt, tiny_data, tmp_path):
    ck = f'--out_dir={tiny_ckpt}'
    assert 'no checkpoint' in error(monkeypatch, capsys, f'--out_dir={tmp_path}')
    assert 'stride' in error(monkeypatch, capsys, ck, '--stride=65')
    assert 'stride' in error(monkeypatch, capsys, ck, '--stride=-1')
    assert 'batch_size' in error(monkeypatch, capsys, ck, '--batch_size=0')
    assert 'dtype' in error(monkeypatch, capsys, ck, '--dtype=float64')
    assert "no split 'test'" in error(monkeypatch, capsys, ck, '--split=test')
    assert 'meta.json' in error(monkeypatch, capsys, ck, f'--data_dir={tmp_path}')
    cut = tmp_path / 'cut'  # a split file that doesn't match its meta.json
    shutil.copytree(tiny_data, cut)
    (cut / 'val.bin').write_bytes((tiny_data / 'val.bin').read_bytes()[:1000])
    assert 'prepare.py' in error(monkeypatch, capsys, ck, f'--data_dir={cut}')
    wild = tmp_path / 'wild'  # a damaged split: ids past the model's vocabulary (an IndexError in the model before)
    shutil.copytree(tiny_data, wild)
    n = len(split(tiny_data)[0])
    np.full(n, 600, dtype=np.uint16).tofile(wild / 'val.bin')
    assert 'token id 600, past vocab_size=512' in error(monkeypatch, capsys, ck, f'--data_dir={wild}')
    (tmp_path / 'bad.pt').write_bytes(b'\x00' * 64)
    assert 'bad.pt' in error(monkeypatch, capsys, f'--out_dir={tmp_path}', '--ckpt=bad.pt')
    assert not (tmp_path / 'eval.json').exists()
