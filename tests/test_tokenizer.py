"""tokenizer.py: GPT-2 offline, our byte-level BPE trainer, tokenizer.json, and the state that checkpoints carry."""
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import tokenizer  # noqa: E402
from tokenizer import EOT  # noqa: E402


def stories_of(path, limit=None):
    return [s.strip() for s in Path(path).read_text().split(EOT) if s.strip()][:limit]


@pytest.fixture(scope='module')
def gpt2(shared_data):
    if not tokenizer.gpt2_files(shared_data / 'gpt2'):
        pytest.skip('no GPT-2 files in $SHARED_DATA/gpt2')
    return tokenizer.load_gpt2(str(shared_data / 'gpt2'))


@pytest.fixture(scope='module')
def train_stories(shared_data):
    return stories_of(shared_data / 'tinystories' / 'train-v1-head.txt', 600)  # ~500 KB


@pytest.fixture(scope='module')
def bpe(train_stories):
    return tokenizer.bpe_from_json(tokenizer.bpe_json(tokenizer.train_bpe(train_stories, 700, progress=False)))


# ---- GPT-2


def test_gpt2_loads_offline_with_the_published_ids(gpt2):
    """GPT-2 built from vocab.json + merges.txt has 50257 tokens, eot 50256, and GPT-2's known ids."""
    assert (gpt2.n_vocab, gpt2.eot_token) == (50257, 50256)
    assert gpt2.encode('Once upon a time') == [7454, 2402, 257, 640]
    assert gpt2.encode(f'Hello world{EOT}', allowed_special={EOT}) == [15496, 995, 50256]


def no_download(name):
    raise AssertionError(f'tiktoken.get_encoding({name!r}) called although local GPT-2 files exist')


def test_gpt2_openai_file_names_and_GPT2_DIR(shared_data, gpt2, tmp_path, monkeypatch):
    """A directory with OpenAI's encoder.json + vocab.bpe (with its #version line), found through GPT2_DIR,
    gives exactly the same encoding as vocab.json + merges.txt, and nothing is downloaded."""
    shutil.copy(shared_data / 'gpt2' / 'vocab.json', tmp_path / 'encoder.json')
    (tmp_path / 'vocab.bpe').write_text('#version: 0.2\n' + (shared_data / 'gpt2' / 'merges.txt').read_text())
    monkeypatch.setenv('GPT2_DIR', str(tmp_path))
    monkeypatch.setattr(tokenizer.tiktoken, 'get_encoding', no_download)
    enc = tokenizer.load_gpt2()
    text = (shared_data / 'tinystories' / 'format-sample-v2.txt').read_text()
    assert enc.encode(text, allowed_special={EOT}) == gpt2.encode(text, allowed_special={EOT})


def test_gpt2_without_local_files_comes_from_tiktoken(gpt2, tmp_path, monkeypatch):
    """With no GPT-2 files in GPT2_DIR or $SHARED_DATA/gpt2, load_gpt2 (and a checkpoint's gpt2 state) takes
    tiktoken's own 'gpt2' encoding, which tiktoken downloads on a machine with internet (simulated here)."""
    monkeypatch.setenv('GPT2_DIR', str(tmp_path))
    monkeypatch.setattr(tokenizer, 'SHARED_DATA', str(tmp_path))
    asked = []
    monkeypatch.setattr(tokenizer.tiktoken, 'get_encoding', lambda name: asked.append(name) or gpt2)
    assert tokenizer.load_gpt2() is gpt2 and asked == ['gpt2']
    assert tokenizer.from_state({'name': 'gpt2', 'n_vocab': 50257, 'eot_id': 50256, 'json': None}) is gpt2


def test_gpt2_missing_files_and_no_download_say_what_to_do(tmp_path, monkeypatch):
    """Without GPT-2 files anywhere and no download possible, load_gpt2 raises a one-line FileNotFoundError that
    names where it looked, why the download failed, and GPT2_DIR; an explicit gpt2_dir without files is refused
    without trying a download."""
    monkeypatch.setenv('GPT2_DIR', str(tmp_path))
    monkeypatch.setattr(tokenizer, 'SHARED_DATA', str(tmp_path))

    def offline(name):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'\n(Name or service not known)")
    monkeypatch.setattr(tokenizer.tiktoken, 'get_encoding', offline)
    with pytest.raises(FileNotFoundError) as e:
        tokenizer.load_gpt2()
    assert '\n' not in str(e.value) and str(tmp_path) in str(e.value)
    assert 'ConnectionError' in str(e.value) and 'set GPT2_DIR=<dir>' in str(e.value)
    monkeypatch.setattr(tokenizer.tiktoken, 'get_encoding', no_download)
    with pytest.raises(FileNotFoundError, match='no GPT-2 BPE files in'):
        tokenizer.load_gpt2(str(tmp_path))


def test_gpt2_mismatched_files_are_refused(shared_data, tmp_path):
    """A merges file that doesn't belong to the vocab (here: two merges swapped) is refused, not used."""
    lines = (shared_data / 'gpt2' / 'merges.txt').read_text().splitlines()
    lines[0], lines[1] = lines[1], lines[0]
    (tmp_path / 'merges.txt').write_text('\n'.join(lines) + '\n')
    shutil.copy(shared_data / 'gpt2' / 'vocab.json', tmp_path / 'vocab.json')
    with pytest.raises(ValueError, match="don't match"):
        tokenizer.load_gpt2(str(tmp_path))


# ---- both tokenizers: round trip and the special token

@settings(max_examples=150, deadline=None, database=None)
@given(text=st.text())
def test_round_trip_any_unicode(gpt2, bpe, text):
    """decode(encode(s)) == s for arbitrary Unicode text, with both tokenizers (special tokens allowed or not)."""
    for enc in (gpt2, bpe):
        assert enc.decode(enc.encode_ordinary(text)) == text
        assert enc.decode(enc.encode(text, allowed_special='all')) == text


@settings(max_examples=100, deadline=None, database=None)
@given(left=st.text(), right=st.text())
def test_special_token_is_one_id_and_never_merged(gpt2, bpe, left, right):
    """<|endoftext|> encodes to the single eot id, and the text either side encodes exactly as on its own:
    no token spans the delimiter."""
    left, right = left.replace(EOT, ''), right.replace(EOT, '')
    for enc in (gpt2, bpe):
        ids = enc.encode(left + EOT + right, allowed_special={EOT})
        assert ids == enc.encode_ordinary(left) + [enc.eot_token] + enc.encode_ordinary(right)
        assert enc.decode([enc.eot_token]) == EOT


def test_bpe_never_learns_tokens_across_the_delimiter():
    """Training text full of <|endoftext|> between stories: no learned token holds any of its characters
    (without the split, '<|', '|>' and 'ab<|' pieces would be the most frequent pairs here)."""
    merges = tokenizer.train_bpe([f'ab{EOT}cd{EOT}'] * 50 + ['the cat sat'] * 5, 300, progress=False)
    enc = tokenizer.bpe_from_json(tokenizer.bpe_json(merges))
    learned = [enc.decode_single_token_bytes(i) for i in range(256, enc.eot_token)]
    assert learned and not any(set(t) & set(b'<|>') for t in learned)


# ---- BPE training


def test_bpe_training_is_deterministic_and_ties_break_by_bytes(train_stories, monkeypatch):
    """Same text + vocab size -> identical merges, whether pre-tokens are counted in one process or two;
    among equally frequent pairs the one whose bytes sort first is merged first."""
    a = tokenizer.train_bpe(train_stories, 400, progress=False)
    assert a == tokenizer.train_bpe(list(train_stories), 400, progress=False)
    monkeypatch.setattr(tokenizer, 'PARALLEL_MIN_CHARS', 0)  # force the multiprocessing path
    assert a == tokenizer.train_bpe(train_stories, 400, num_proc=2, progress=False)
    # all pairs of 'ab', ' cd' occur once: (b' ', b'c') sorts first, then (b' c', b'd') before (b'a', b'b')
    assert tokenizer.train_bpe(['ab cd'], 260, progress=False) == [(32, 99), (256, 100), (97, 98)]


def test_bpe_compresses_tinystories_better_than_bytes(shared_data, train_stories, bpe):
    """On held-out TinyStories text, the learned BPE needs well under half as many tokens as raw bytes,
    and a bigger vocabulary needs fewer tokens than a smaller one."""
    val = (shared_data / 'tinystories' / 'validation-head.txt').read_text()[:200_000]
    n_bytes = len(val.encode('utf-8'))
    small = tokenizer.bpe_from_json(tokenizer.bpe_json(tokenizer.train_bpe(train_stories, 300, progress=False)))
    assert len(bpe.encode_ordinary(val)) < len(small.encode_ordinary(val)) < n_bytes
    assert n_bytes / len(bpe.encode_ordinary(val)) > 2.5
    assert b' the' in {bpe.decode_single_token_bytes(i) for i in range(bpe.eot_token)}


def test_vocab_size_too_small_is_refused():
    with pytest.raises(ValueError, match='too small'):
        tokenizer.train_bpe(['hello'], 256)


def test_bpe_stops_when_nothing_is_left_to_merge():
    """A tiny text runs out of pairs: training stops early and the vocabulary is what it learned."""
    merges = tokenizer.train_bpe(['aaaa'], 1000, progress=False)
    enc = tokenizer.bpe_from_json(tokenizer.bpe_json(merges))
    assert enc.encode_ordinary('aaaa') == [enc.n_vocab - 2] and enc.n_vocab == 257 + len(merges)


# ---- tokenizer.json and the state in checkpoints


def test_tokenizer_json_round_trip_and_corruption(bpe, train_stories, tmp_path):
    """tokenizer.json reloads to an identical encoding; a damaged file is a one-line ValueError naming it."""
    merges = tokenizer.train_bpe(train_stories[:50], 300, progress=False)
    path = tmp_path / 'tokenizer.json'
    path.write_text(tokenizer.bpe_json(merges))
    d = json.loads(Path(path).read_text())
    assert d['merges'] == [list(m) for m in merges] and d['special_tokens'] == {EOT: 256 + len(merges)}
    again = tokenizer.bpe_from_json(Path(path).read_text())
    text = ' '.join(train_stories[50:60])
    assert again.encode_ordinary(text) == tokenizer.bpe_from_json(tokenizer.bpe_json(merges)).encode_ordinary(text)
    for broken in (Path(path).read_text()[:-40], json.dumps({**d, 'merges': [[0, 9999]]}), json.dumps({**d, 'version': 2}),
                   json.dumps({**d, 'merges': [[97, 98], [97, 98]]})):
        with pytest.raises(ValueError, match='^tokenizer.json is not a valid tokenizer file'):
            tokenizer.bpe_from_json(broken, where='tokenizer.json')


def test_state_is_plain_and_rebuilds_the_same_encoding(tiny_data, tmp_path):
    """state_from_dir is plain str/int/None that survives torch.save/load(weights_only=True), and
    from_state(state) encodes exactly like from_dir(data_dir)."""
    state = tokenizer.state_from_dir(tiny_data)
    assert all(isinstance(v, (str, int, type(None))) for v in state.values())
    torch.save({'tokenizer': state}, tmp_path / 'c.pt')
    loaded = torch.load(tmp_path / 'c.pt', weights_only=True)['tokenizer']
    assert loaded == state
    text = (tiny_data / 'val.txt').read_text()[:5000]
    assert tokenizer.from_state(loaded).encode_ordinary(text) == tokenizer.from_dir(tiny_data).encode_ordinary(text)
    with pytest.raises(ValueError, match='not from tokenizer.state_from_dir'):
        tokenizer.from_state({'kind': 'bpe'})
    with pytest.raises(FileNotFoundError, match='run python prepare.py'):
        tokenizer.from_dir(tmp_path)
