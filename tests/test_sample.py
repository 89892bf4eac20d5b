"""sample.py: every decoding strategy does what it promises, runs are reproducible, prompts come from
text, files or stdin, and mistakes get one-line errors. sample.py runs in-process (runpy) where a test
only reads its output, which saves a Python+torch start per run; one test runs it as a real process."""
import io
import itertools
import runpy
import subprocess
import sys

import pytest
import torch

from configurator import describe
from conftest import ROOT, run_script

sys.path.insert(0, str(ROOT))
from decode import beam_search, generate  # noqa: E402
from model import GPT  # noqa: E402

SEP = '\n---------------\n'


def new_tokens(model, x, n, **kw):
    """The (B, n) tokens decode.generate continues x (B, T) with."""
    return torch.stack(list(generate(model, x, n, **kw)), 1)


def sample(monkeypatch, capsys, ckpt_dir, *args, stdin=None):
    """Run sample.py on the checkpoint in ckpt_dir with args; return the stories it printed."""
    monkeypatch.setattr(sys, 'argv', ['sample.py', f'--out_dir={ckpt_dir}', '--device=cpu', '--dtype=float32',
                                      '--max_new_tokens=40', *args])
    if stdin is not None:
        monkeypatch.setattr(sys, 'stdin', io.StringIO(stdin))
    capsys.readouterr()
    runpy.run_path(str(ROOT / 'sample.py'), run_name='__main__')
    out = capsys.readouterr().out
    assert out.endswith(SEP)
    return out.split(SEP)[:-1]


def error(monkeypatch, capsys, ckpt_dir, *args):
    """The one-line message sample.py exits with for these args."""
    with pytest.raises((SystemExit, ValueError, OSError)) as e:  # the script's exit, or what the hook prints
        sample(monkeypatch, capsys, ckpt_dir, *args)
    msg = e.value.code if isinstance(e.value, SystemExit) else describe(e.value)
    assert isinstance(msg, str) and '\n' not in msg, msg
    return msg


def load(ckpt_dir):
    import tokenizer
    model, ckpt = GPT.from_checkpoint(str(ckpt_dir / 'best.pt'), device='cpu')
    return model.eval(), tokenizer.from_state(ckpt['tokenizer'])


def test_same_seed_same_stories_other_seed_other_stories(monkeypatch, capsys, tiny_ckpt):
    args = ['--start=Once upon a time', '--temperature=1.0', '--num_samples=2']
    a = sample(monkeypatch, capsys, tiny_ckpt, *args, '--seed=3')
    b = sample(monkeypatch, capsys, tiny_ckpt, *args, '--seed=3')
    c = sample(monkeypatch, capsys, tiny_ckpt, *args, '--seed=4')
    assert len(a) == 2 and all(s.startswith('Once upon a time') for s in a)
    assert a == b
    assert a != c and a[0] != a[1]


def test_greedy_top_k_1_and_tiny_top_p_print_the_same_story(monkeypatch, capsys, tiny_ckpt):
    """top_k=1 and a tiny nucleus leave one candidate, the most likely token, whatever the temperature
    and seed; and the streamed text is the decoding of the model's greedy tokens."""
    greedy = sample(monkeypatch, capsys, tiny_ckpt, '--start=Lily saw', '--temperature=0', '--num_samples=1')
    top_k = sample(monkeypatch, capsys, tiny_ckpt, '--start=Lily saw', '--temperature=1.5', '--top_k=1', '--seed=9')
    top_p = sample(monkeypatch, capsys, tiny_ckpt, '--start=Lily saw', '--temperature=1.5', '--top_p=1e-6', '--seed=8')
    assert top_k == top_p == greedy * 3  # num_samples defaults to 3: three times the same story
    model, enc = load(tiny_ckpt)
    ids = [enc.eot_token] + enc.encode('Lily saw')
    new = new_tokens(model, torch.tensor([ids]), 40, temperature=0, eos_id=enc.eot_token)[0].tolist()
    assert greedy[0] == 'Lily saw' + enc.decode(new[:new.index(enc.eot_token)] if enc.eot_token in new else new)


def test_beam_search_prints_the_models_best_beam(monkeypatch, capsys, tiny_ckpt):
    out = sample(monkeypatch, capsys, tiny_ckpt, '--start=Tom had a', '--beam_width=3', '--stop_at_eot=False')
    model, enc = load(tiny_ckpt)
    ids = [enc.eot_token] + enc.encode('Tom had a')
    best = beam_search(model, torch.tensor([ids]), 40, 3)[0, len(ids):].tolist()
    assert out == ['Tom had a' + enc.decode(best)]  # one story: beam search is deterministic


def test_sample_i_is_the_models_draw_with_seed_plus_i(monkeypatch, capsys, tiny_ckpt):
    """Batched, the stories are the rows of the model's batched draw in which row i has its own generator seeded
    seed + i; streamed (--stream=True), story i is the model's single draw with seed + i. Both are printed as
    the decoding of the drawn tokens, with the given temperature."""
    args = ['--start=“Mom', '--temperature=1.3', '--num_samples=4', '--stop_at_eot=False', '--seed=11']
    batched = sample(monkeypatch, capsys, tiny_ckpt, *args)
    streamed = sample(monkeypatch, capsys, tiny_ckpt, *args, '--stream=True')
    model, enc = load(tiny_ckpt)
    x = torch.tensor([[enc.eot_token] + enc.encode('“Mom')])
    rows = new_tokens(model, x.expand(4, -1), 40, temperature=1.3,
                      generator=[torch.Generator().manual_seed(11 + i) for i in range(4)])
    assert batched == ['“Mom' + enc.decode(row) for row in rows.tolist()]
    for i, story in enumerate(streamed):
        new = new_tokens(model, x, 40, temperature=1.3, generator=torch.Generator().manual_seed(11 + i))[0]
        assert story == '“Mom' + enc.decode(new.tolist())
    assert len(set(batched)) == 4 and sample(monkeypatch, capsys, tiny_ckpt, *args) == batched  # same seed, same stories


def test_characters_split_across_tokens_print_whole(monkeypatch, capsys, tiny_ckpt):
    """The 512-token BPE spells “ ’ and ☃ as several byte tokens: streamed one token at a time, each must
    still print as one character, not as replacement marks. The model's stream is scripted here."""
    enc = load(tiny_ckpt)[1]
    text = ' “Hi,” said Mom’s snowman ☃.'
    ids = enc.encode(text)
    assert any(not enc.decode_single_token_bytes(t).decode('utf-8', 'ignore') for t in ids)  # truly split

    def scripted(model, idx, max_new_tokens, **kwargs):
        yield from (torch.tensor([t]) for t in ids + [enc.eot_token])
    monkeypatch.setattr('decode.generate', scripted)
    assert sample(monkeypatch, capsys, tiny_ckpt, '--start=Then', '--num_samples=1') == ['Then' + text]


def test_stories_stop_at_end_of_text(monkeypatch, capsys, tiny_ckpt):
    """With stop_at_eot (the default) each story is the unstopped one cut before its first <|endoftext|>."""
    args = ['--temperature=1.0', '--num_samples=8', '--max_new_tokens=150', '--seed=1']
    running_on = sample(monkeypatch, capsys, tiny_ckpt, *args, '--stop_at_eot=False')
    stopped = sample(monkeypatch, capsys, tiny_ckpt, *args)
    assert any('<|endoftext|>' in s for s in running_on)  # or this test would prove nothing
    assert stopped == [s.split('<|endoftext|>')[0] for s in running_on]


def test_file_prompt_equals_the_same_text_given_directly(monkeypatch, capsys, tiny_ckpt, tmp_path):
    (tmp_path / 'prompt.txt').write_text('One day, Ben went to the park.\n')  # the editor's newline is dropped
    (tmp_path / 'empty.txt').write_text('')
    args = ['--temperature=0', '--num_samples=1']
    direct = sample(monkeypatch, capsys, tiny_ckpt, *args, '--start=One day, Ben went to the park.')
    from_file = sample(monkeypatch, capsys, tiny_ckpt, *args, f'--start=FILE:{tmp_path / "prompt.txt"}')
    assert from_file == direct and direct[0].startswith('One day, Ben went to the park.')
    # An empty file is a fresh story, like an empty --start.
    assert sample(monkeypatch, capsys, tiny_ckpt, *args, f'--start=FILE:{tmp_path / "empty.txt"}') == \
        sample(monkeypatch, capsys, tiny_ckpt, *args, '--start=')


def test_interactive_mode_answers_each_stdin_line_until_eof(monkeypatch, capsys, tiny_ckpt):
    args = ['--temperature=0.9', '--num_samples=1', '--seed=5']
    out = sample(monkeypatch, capsys, tiny_ckpt, *args, '--interactive=True', stdin='Once upon a time\n\nThe cat')
    assert len(out) == 3  # the last line has no newline before EOF and still counts
    assert out[0] == sample(monkeypatch, capsys, tiny_ckpt, *args, '--start=Once upon a time')[0]
    assert out[1] == sample(monkeypatch, capsys, tiny_ckpt, *args)[0]  # an empty line: a fresh story
    assert out[2].startswith('The cat')


@pytest.mark.parametrize('args,words', [
    (['--start=   '], 'only whitespace'),
    (['--start=FILE:'], 'needs a file name'),
    (['--start=FILE:/no/such/prompt.txt'], '/no/such/prompt.txt'),
    (['--beam_width=4', '--top_k=5'], 'beam search'),
    (['--temperature=0', '--top_p=0.9'], 'greedy'),
    (['--temperature=-1'], 'temperature'),
    (['--top_p=1.5'], 'top_p'),
    (['--top_k=-3'], 'top_k'),
    (['--max_new_tokens=0'], 'max_new_tokens'),
    (['--interactive=True', '--start=Hi'], 'interactive'),
    (['--device=gpu0'], 'device'),
    (['--ckpt=nothing_here.pt'], 'no checkpoint'),
    (['--seed=99999999999999999999'], 'seed=99999999999999999999 must be in [0, 2**64'),
    (['--seed=-1'], 'seed=-1 must be in'),
])
def test_bad_settings_exit_with_one_line_naming_the_problem(monkeypatch, capsys, tiny_ckpt, args, words):
    assert words in error(monkeypatch, capsys, tiny_ckpt, *args)


def test_corrupt_checkpoint_is_one_line_error(monkeypatch, capsys, tiny_ckpt, tmp_path):
    good = (tiny_ckpt / 'best.pt').read_bytes()
    (tmp_path / 'truncated.pt').write_bytes(good[:len(good) // 2])
    assert 'truncated.pt' in error(monkeypatch, capsys, tmp_path, '--ckpt=truncated.pt')
    # And as a real process: nothing on stderr but the one line, no traceback.
    (tmp_path / 'garbage.pt').write_bytes(b'not a checkpoint' * 100)
    p = run_script('sample.py', f'--out_dir={tmp_path}', '--ckpt=garbage.pt', '--device=cpu', check=False)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1 and 'garbage.pt' in p.stderr, p.stderr


def test_stories_piped_into_a_reader_that_leaves_early_end_quietly(tiny_ckpt):
    """`python sample.py | head -c 20` is a documented use: the reader leaving is no error of ours."""
    cmd = (f'set -o pipefail; OMP_NUM_THREADS=1 {sys.executable} {ROOT / "sample.py"} --out_dir={tiny_ckpt} '
           '--device=cpu --num_samples=40 --max_new_tokens=60 --stream=True | head -c 20')
    p = subprocess.run(cmd, shell=True, executable='/bin/bash', capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and len(p.stdout) == 20, (p.returncode, p.stdout)
    assert 'Traceback' not in p.stderr and 'Error' not in p.stderr, p.stderr


def test_interactive_mode_with_stdin_closed_is_one_line(tiny_ckpt):
    p = subprocess.run(f'{sys.executable} {ROOT / "sample.py"} --out_dir={tiny_ckpt} --device=cpu --interactive=True '
                       '<&-', shell=True, executable='/bin/bash', capture_output=True, text=True, timeout=300)
    assert p.returncode == 1 and p.stderr.strip().splitlines() == [
        '--interactive=True reads prompts from stdin, but stdin is closed; pipe prompts in, or pass --start=TEXT instead']
